"""``slaplane profile``: measure an OpenAI-compatible endpoint (vLLM or the sim worker)
into the profile CSV the sim model, predictor and planner read, and recommend a
prefill/decode split and batch limits for TTFT/ITL targets (Dynamo's profile_sla).

Heavy imports live inside ``main`` so ``slaplane --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _bxc(s: str) -> tuple[int, int]:
    b, c = s.lower().split("x")
    return int(b), int(c)


def _pd_main(
    prefill_url: str,
    decode_url: str,
    out: Path,
    *,
    model: str | None,
    name: str | None,
    base_profile: str,
    prompt_lengths: list[int],
    join_batches: list[int],
    decode_points: list[tuple[int, int]],
    joins: int,
    repeats: int,
    decode_tokens: int,
    co_load: bool,
    max_model_len: int,
    checkpoint: Path | None,
    fresh: bool,
    timeout_s: float,
    quiet: bool,
    json_out: Path | None,
) -> None:
    import asyncio
    import datetime as dt
    import os

    from rich.console import Console

    from controlplane.profiler.pd import make_pd_plan, pd_terms, run_pd_plan, write_pd_profile
    from controlplane.profiler.plan import Checkpoint
    from controlplane.profiles import parse_profile, profile_path

    base_path = profile_path(base_profile)
    base_text = base_path.read_text()
    base = parse_profile(base_text, name=base_path.stem)
    ckpt_path = checkpoint or out.with_suffix(".points.jsonl")
    if fresh and ckpt_path.exists():
        ckpt_path.unlink()
    ckpt = Checkpoint(ckpt_path)
    plan = make_pd_plan(prompt_lengths, join_batches, decode_points, max_model_len)
    console = Console(stderr=True)
    load0 = os.getloadavg()[0]
    try:
        asyncio.run(
            run_pd_plan(prefill_url, decode_url, model, plan, ckpt, repeats=repeats,
                        decode_tokens=decode_tokens, joins=joins, timeout_s=timeout_s,
                        console=console, quiet=quiet, with_co_load=co_load,
                        max_model_len=max_model_len)
        )  # fmt: skip
    except (RuntimeError, OSError, TimeoutError) as exc:
        console.print(f"[red]profile stopped:[/red] {exc}  (resume with the same command)")
        raise typer.Exit(2) from None
    terms = pd_terms(ckpt.results.values(), base)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
    meta = {
        "name": name or out.stem,
        "decode_scale": f"{terms.decode_scale:.3f}",
        "pd_base": base.name,
        "pd_measured": when,
        "pd_load": f"{load0:.1f}-{os.getloadavg()[0]:.1f}",
        "pd_co_load": str(int(co_load)),
    }
    prof = write_pd_profile(out, base_text, terms, meta)
    print(f"wrote {out} ({len(ckpt.results)} P/D points over base {base.name})")
    save_rows = ", ".join(f"{n}:{ms:.1f}" for _, n, ms in terms.kv_save_rows)
    load_rows = ", ".join(f"b{b}/{n}:{ms:.1f}" for b, n, ms in terms.kv_load_rows)
    ratios = ", ".join(f"{b}x{c}:{r:.2f}" for b, c, r in terms.decode_ratios)
    save_us, load_us = 1000 * prof.kv_save_ms_per_token, 1000 * prof.kv_load_ms_per_token
    print(f"kv_save: {prof.kv_save_base_ms:.2f} ms + {save_us:.2f} us/token  (rows: {save_rows})")
    print(f"kv_load: {prof.kv_load_base_ms:.2f} ms + {load_us:.2f} us/token  (rows: {load_rows})")
    print(f"decode_scale: {terms.decode_scale:.2f}  (ratios: {ratios})")
    hand = [(n, ms - prof.decode_ms(1, n) - prof.kv_load_ms(n)) for n, ms in terms.remote_ttft]
    print("idle remote TTFT - model (off-engine hand-off): "
          + ", ".join(f"{n}:{ms:.1f} ms" for n, ms in hand))  # fmt: skip
    if json_out is not None:
        json_out.write_text(json.dumps({
            "meta": meta, "kv_save_rows": terms.kv_save_rows, "kv_load_rows": terms.kv_load_rows,
            "decode_ratios": terms.decode_ratios, "remote_ttft": terms.remote_ttft,
            "handoff_ms": hand,
            "kv_save": [prof.kv_save_base_ms, prof.kv_save_ms_per_token],
            "kv_load": [prof.kv_load_base_ms, prof.kv_load_ms_per_token],
        }, indent=2))  # fmt: skip


def main(
    out: Annotated[Path, typer.Option("--out", help="Profile CSV to write.")],
    url: Annotated[
        str | None, typer.Option("--url", help="Endpoint base URL, e.g. http://127.0.0.1:8000")
    ] = None,
    prefill_url: Annotated[
        str | None,
        typer.Option(
            "--prefill-url", help="P/D mode: the pair's prefill worker (with --decode-url)."
        ),
    ] = None,
    decode_url: Annotated[
        str | None, typer.Option("--decode-url", help="P/D mode: the pair's decode worker.")
    ] = None,
    base_profile: Annotated[
        str,
        typer.Option(
            "--base-profile", help="P/D mode: plain-server profile the terms are relative to."
        ),
    ] = "cpu-tiny",
    join_batches: Annotated[
        str, typer.Option("--join-batches", help="P/D mode: co-running decode batches.")
    ] = "4",
    joins: Annotated[
        int, typer.Option("--joins", help="P/D mode: remote-KV requests joined per round.")
    ] = 8,
    co_load: Annotated[
        bool,
        typer.Option(
            "--co-load/--no-co-load", help="P/D mode: keep the other engine busy meanwhile."
        ),
    ] = False,
    pd_decode_points: Annotated[
        str,
        typer.Option("--pd-decode-points", help="P/D mode: decode BxC points for decode_scale."),
    ] = "1x128,4x128,4x1024",
    model: Annotated[
        str | None, typer.Option("--model", help="Default: first of /v1/models.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Profile name (default: file stem).")
    ] = None,
    prompt_lengths: Annotated[str, typer.Option("--prompt-lengths")] = "64,256,1024,2048",
    batches: Annotated[str, typer.Option("--batches")] = "1,2,4,8",
    contexts: Annotated[str, typer.Option("--contexts")] = "128,1024",
    repeats: Annotated[int, typer.Option("--repeats", help="Samples per point.")] = 3,
    decode_tokens: Annotated[
        int, typer.Option("--decode-tokens", help="Tokens per decode stream.")
    ] = 32,
    max_model_len: Annotated[int, typer.Option("--max-model-len")] = 4096,
    kv_capacity_tokens: Annotated[int | None, typer.Option("--kv-capacity-tokens")] = None,
    max_num_seqs: Annotated[int | None, typer.Option("--max-num-seqs")] = None,
    max_num_batched_tokens: Annotated[int | None, typer.Option("--max-num-batched-tokens")] = None,
    block_size: Annotated[int | None, typer.Option("--block-size")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Default: OUT.points.jsonl")
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Ignore the checkpoint; measure all.")
    ] = False,
    ttft_ms: Annotated[float, typer.Option("--ttft-ms")] = 2000.0,
    itl_ms: Annotated[float, typer.Option("--itl-ms")] = 50.0,
    workload_prompt: Annotated[
        float, typer.Option("--prompt-tokens", help="Typical prompt.")
    ] = 1024,
    workload_output: Annotated[
        float, typer.Option("--output-tokens", help="Typical output.")
    ] = 128,
    rate_rps: Annotated[
        float, typer.Option("--rate-rps", help="Load to size the split for.")
    ] = 1.0,
    plot: Annotated[Path | None, typer.Option("--plot", help="PNG of the measured curves.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Recommendation as JSON.")] = None,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Per request.")] = 300.0,
    quiet: Annotated[bool, typer.Option("--quiet")] = False,
) -> None:
    """Profile an endpoint: TTFT vs prompt length, ITL vs batch x context; write the CSV.

    P/D mode (``--prefill-url`` and ``--decode-url``): measure what a real prefill/decode
    pair costs beyond ``--base-profile`` (connector KV save on the producer, KV load on
    the decode engine, decode slowdown of engines sharing cores) and write the base
    profile with those terms (see ``controlplane/profiler/pd.py``)."""
    import asyncio

    from rich.console import Console

    if prefill_url or decode_url:
        if not (prefill_url and decode_url):
            raise typer.BadParameter("P/D mode needs both --prefill-url and --decode-url")
        _pd_main(
            prefill_url, decode_url, out, model=model, name=name, base_profile=base_profile,
            prompt_lengths=_ints(prompt_lengths), join_batches=_ints(join_batches),
            decode_points=[_bxc(x) for x in pd_decode_points.split(",") if x.strip()],
            joins=joins, repeats=repeats, decode_tokens=decode_tokens, co_load=co_load,
            max_model_len=max_model_len, checkpoint=checkpoint, fresh=fresh,
            timeout_s=timeout_s, quiet=quiet, json_out=json_out,
        )  # fmt: skip
        return
    if url is None:
        raise typer.BadParameter("give --url (or --prefill-url and --decode-url for P/D mode)")

    from controlplane.profiler.output import write_profile
    from controlplane.profiler.plan import Checkpoint, make_plan
    from controlplane.profiler.recommend import recommend
    from controlplane.profiler.run import run_plan

    ckpt_path = checkpoint or out.with_suffix(".points.jsonl")
    if fresh and ckpt_path.exists():
        ckpt_path.unlink()
    ckpt = Checkpoint(ckpt_path)
    plan = make_plan(_ints(prompt_lengths), _ints(batches), _ints(contexts), max_model_len)
    console = Console(stderr=True)
    try:
        model_id = asyncio.run(
            run_plan(url, model, plan, ckpt, repeats=repeats, decode_tokens=decode_tokens,
                     timeout_s=timeout_s, console=console, quiet=quiet)
        )  # fmt: skip
    except (RuntimeError, OSError, TimeoutError) as exc:
        # Measured points are already in the checkpoint: a rerun resumes from them.
        console.print(f"[red]profile stopped:[/red] {exc}  (resume with the same command)")
        raise typer.Exit(2) from None
    meta: dict[str, str | int] = {"name": name or out.stem, "model": model_id.replace(" ", "_")}
    for k, v in (
        ("kv_capacity_tokens", kv_capacity_tokens), ("block_size", block_size),
        ("max_num_batched_tokens", max_num_batched_tokens), ("max_num_seqs", max_num_seqs),
        ("max_model_len", max_model_len),
    ):  # fmt: skip
        if v is not None:
            meta[k] = v
    prof = write_profile(out, ckpt.results.values(), meta)
    rec = recommend(
        prof, ttft_ms=ttft_ms, itl_ms=itl_ms, prompt_tokens=workload_prompt,
        output_tokens=workload_output, rate_rps=rate_rps,
    )  # fmt: skip
    print(f"wrote {out} ({len(ckpt.results)} points)")
    print(
        f"for TTFT {ttft_ms:g} ms / ITL {itl_ms:g} ms at {rate_rps:g} req/s of "
        f"{workload_prompt:g}/{workload_output:g} tokens: {rec.prefill_workers} prefill + "
        f"{rec.decode_workers} decode workers; decode batch limit {rec.decode_batch_limit} "
        f"(step {rec.decode_step_ms:.1f} ms); prompts up to {rec.max_prompt_tokens_in_ttft} "
        f"tokens fit the TTFT target{'' if rec.feasible else ' — TARGETS NOT FEASIBLE'}"
    )
    if json_out is not None:
        json_out.write_text(json.dumps(rec.to_json(), indent=2))
    if plot is not None:
        from controlplane.profiler.plots import plot_profile

        print(f"wrote {plot_profile(ckpt.results.values(), plot, f'{model_id} @ {url}')}")
