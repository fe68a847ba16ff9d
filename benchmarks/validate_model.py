"""Validate the worker model: one trace slice through (a) the replay, (b) the live stack
on sim workers, (c) the live stack on real tiny vLLM workers; TTFT/TPOT side by side.

The replay is only worth what its worker model is worth (issue 6). All three paths
get the same requests: a window of the Azure code trace, rate-scaled, prompts and
outputs capped to fit ``max_model_len`` 4096, written once as an Azure CSV so the
replay reads exactly the file the trace client sends. The live paths are 1 prefill
+ 1 decode worker behind ``slaplane gateway`` (round_robin, predictive rejection
off so no request is shed) with an agent per worker and a private Redis, driven by a
client that posts each request at its arrival time and measures TTFT and TPOT
(``vllm bench serve`` definitions) at the client, as a user would see them.

``--calibrate`` measures the live stack's fixed P/D hand-off overhead (gateway hop,
second HTTP request, KV load, first decode step beyond the profile) with idle probe
requests at a few prompt lengths *before* the trace runs, fits ``a + b x prompt``
to the residual against the profile, and replays with that as the KV transfer term:
the model is corrected from a separate measurement, never from the validated run.

``--measure-pd`` (live vLLM only) first runs ``slaplane profile --prefill-url
--decode-url`` against the stack's own two workers (separate probes, before the
trace): the P/D connector's engine costs (KV save on the producer, KV load inside
the decode step) and the decode slowdown of engines sharing the cores, on top of
``--profile``; the replay is then run again on that P/D profile (``replay+pd``, and
with ``--calibrate`` the hand-off fit is taken over the P/D profile: ``replay+pd+cal``).
``--pd-profile FILE`` replays on an already measured P/D profile instead.

    .venv/bin/python benchmarks/validate_model.py --run a,b,c --calibrate
    .venv/bin/python benchmarks/validate_model.py --run a,c --measure-pd --calibrate
    .venv/bin/python benchmarks/validate_model.py --run a,b --window 1890:1905   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``controlplane`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.results_io import Headline, Result, Table, write_result  # noqa: E402
from controlplane.procs import Child, free_port, slaplane_argv, wait_http_ok  # noqa: E402
from controlplane.replay.traces import Trace, parse_window, read_trace, window  # noqa: E402

TRACE = ROOT / "data" / "traces" / "AzureLLMInferenceTrace_code.csv"
MODEL = "tiny-llama"
PROBE_PROMPTS = (256, 512, 1024, 2048)
"""Prompt lengths of the calibration probes (> 128: ExampleConnector moves whole blocks)."""
MAX_PROMPT_TOKENS = 2048
"""Prompt cap. vLLM 0.32's ExampleConnector breaks on chunked prefill: a prompt longer
than ``max_num_batched_tokens`` (2048) is saved one chunk short and the decode worker
dies with ``shape mismatch: value tensor of shape [2048, 4, 128] ... [2944, 4, 128]``
(seen with a 3072-token prompt), so every prompt must fit one prefill step."""
VLLM_ARGS = ("--no-enable-chunked-prefill", "--max-num-batched-tokens=4096")
"""The same bug hits a short prompt that is *chunked because it shares a step* with
others (decode died on ``[384, 4, 128] ... [1536, 4, 128]`` under trace load, and the
gateway then served everything from the prefill worker), so chunked prefill is off on
the vLLM pair; vLLM then needs a step budget of at least ``max_model_len``."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished request as the client (or the replay) saw it."""

    index: int
    prompt_tokens: int
    output_tokens: int
    ttft_ms: float
    tpot_ms: float | None


@dataclass(slots=True)
class PathResult:
    name: str
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def pct(self, metric: str, q: float) -> float | None:
        xs = [v for s in self.samples if (v := getattr(s, metric)) is not None]
        if not xs:
            return None
        return float(statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1])

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "completed": len(self.samples),
            "errors": self.errors,
            "last_error": self.last_error,
            "wall_s": self.wall_s,
            **{f"{m}_p{q}": self.pct(m, q) for m in ("ttft_ms", "tpot_ms") for q in (50, 90)},
            "extra": self.extra,
        }


# ---------------------------------------------------------------- the trace slice
def make_slice(path: Path, spec: str, rate_scale: float, max_prompt: int, max_output: int) -> Trace:
    """Window (trace seconds), then rate scale, then caps: outputs to [2, max_output]
    (TPOT needs two tokens), prompts to ``max_prompt`` (vLLM's max_model_len)."""
    tr = read_trace(path)
    start_s, end_s = parse_window(spec)
    tr = window(tr, start_s, end_s)
    reqs = tuple(
        replace(
            r,
            arrival_s=r.arrival_s / rate_scale,
            prompt_tokens=min(r.prompt_tokens, max_prompt),
            output_tokens=max(2, min(r.output_tokens, max_output)),
        )
        for r in tr.requests
    )
    return Trace(f"{tr.name}[{spec}]x{rate_scale:g}", reqs, 0)


def write_azure_csv(trace: Trace, path: Path) -> Path:
    """The slice in the Azure CSV dialect, so ``slaplane replay --trace`` reads it as is."""
    t0 = datetime(2023, 11, 16, 18, 0, 0, tzinfo=UTC)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for r in trace.requests:
        ts = t0 + timedelta(microseconds=round(r.arrival_s * 1e6))
        lines.append(f"{ts:%Y-%m-%d %H:%M:%S}.{ts.microsecond:06d}0,{r.prompt_tokens},"
                     f"{r.output_tokens}")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- (a) replay
def replay_command(csv: Path, profile: str, kv_ms: float, kv_us_per_token: float) -> str:
    return (
        f".venv/bin/slaplane replay --trace {csv} --prefill 1 --decode 1 --profile {profile} "
        f"--policies round_robin --no-admission --ttft-ms 600000 --itl-ms 60000 "
        f"--kv-transfer-ms {kv_ms:g} --kv-transfer-us-per-token {kv_us_per_token:g}"
    )


def run_replay(
    csv: Path, profile: str, kv_ms: float = 0.0, kv_us_per_token: float = 0.0
) -> PathResult:
    """The replay driver on the slice, exactly what ``replay_command`` runs."""
    from controlplane.replay.accounting import OK
    from controlplane.replay.experiment import Options, build_experiment
    from controlplane.replay.runner import run_once

    opts = Options(
        trace=csv, prefill=1, decode=1, profile=profile, admission=False,
        ttft_ms=600_000, itl_ms=60_000, kv_transfer_ms=kv_ms,
        kv_transfer_us_per_token=kv_us_per_token,
    )  # fmt: skip
    exp = build_experiment(opts)
    _, res = run_once(exp, "round_robin", 1.0)
    out = PathResult("replay", wall_s=res.wall_s)
    for o in res.outcomes:
        if o.status != OK or o.ttft_s is None:
            out.errors += 1
            out.last_error = o.reason
            continue
        out.samples.append(
            Sample(o.index, o.prompt_tokens, o.output_tokens, o.ttft_s * 1000.0,
                   None if o.tpot_s is None else o.tpot_s * 1000.0)
        )  # fmt: skip
    out.extra = {"kv_transfer_ms": kv_ms, "kv_transfer_us_per_token": kv_us_per_token,
                 "command": replay_command(csv, profile, kv_ms, kv_us_per_token)}  # fmt: skip
    return out


# ---------------------------------------------------------------- the trace client
async def one_request(
    session: aiohttp.ClientSession, url: str, model: str, prompt: list[int], max_tokens: int
) -> tuple[float, float | None]:
    """Stream one completion; (TTFT ms, TPOT ms) at the client. TPOT = (last token
    chunk - first) / (completion tokens - 1), tokens from the final usage chunk (a chunk
    may carry several tokens when vLLM's API server falls behind)."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True, "temperature": 0.0,
            "stream_options": {"include_usage": True}}  # fmt: skip
    t0 = time.perf_counter()
    first = last = None
    chunks = 0
    usage_tokens = None
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(str(chunk["error"])[:200])
            if chunk.get("choices"):
                last = time.perf_counter()
                first = first or last
                chunks += 1
            if chunk.get("usage"):
                usage_tokens = chunk["usage"].get("completion_tokens")
    if first is None or last is None:
        raise RuntimeError("stream ended without tokens")
    n = usage_tokens if isinstance(usage_tokens, int) else chunks
    tpot = (last - first) * 1000.0 / (n - 1) if n > 1 else None
    return (first - t0) * 1000.0, tpot


def prompt_for(index: int, tokens: int, seed: int) -> list[int]:
    """Random ids per request: no shared prefixes, as in the replay (no hash_ids)."""
    rng = random.Random(seed * 1_000_003 + index)
    return [rng.randrange(100, 1000) for _ in range(tokens)]


async def drive(url: str, model: str, trace: Trace, seed: int, name: str) -> PathResult:
    """Post every request at its arrival time (open loop) and collect client timings."""
    out = PathResult(name)
    prompts = [prompt_for(r.index, r.prompt_tokens, seed) for r in trace.requests]
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:

        async def one(i: int) -> None:
            r = trace.requests[i]
            try:
                ttft, tpot = await one_request(session, url, model, prompts[i], r.output_tokens)
                out.samples.append(Sample(r.index, r.prompt_tokens, r.output_tokens, ttft, tpot))
            except Exception as exc:  # counted and reported; the run goes on
                out.errors += 1
                out.last_error = f"{type(exc).__name__}: {exc}"[:200]

        t_start = time.perf_counter()
        tasks = []
        lags: list[float] = []
        for i, r in enumerate(trace.requests):
            delay = r.arrival_s - (time.perf_counter() - t_start)
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(max(0.0, (time.perf_counter() - t_start) - r.arrival_s) * 1000.0)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        out.wall_s = time.perf_counter() - t_start
    out.samples.sort(key=lambda s: s.index)
    out.extra["send_lag_ms_p50"] = statistics.median(lags) if lags else 0.0
    out.extra["send_lag_ms_max"] = max(lags) if lags else 0.0
    return out


async def probe(url: str, model: str, seed: int, repeats: int = 3) -> list[tuple[int, float]]:
    """Idle, sequential requests (2 output tokens) at ``PROBE_PROMPTS``: (prompt, TTFT ms)."""
    got: list[tuple[int, float]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await one_request(session, url, model, prompt_for(10**6, 64, seed), 2)  # warm-up
        for p in PROBE_PROMPTS:
            for k in range(repeats):
                ttft, _ = await one_request(
                    session, url, model, prompt_for(10**6 + 10 * p + k, p, seed), 2
                )
                got.append((p, ttft))
    return got


def fit_overhead(probes: Sequence[tuple[int, float]], profile: str) -> tuple[float, float]:
    """Least-squares ``residual = a + b x prompt`` of probe TTFT over the model's idle TTFT
    (prefill + one decode step); returns (a ms, b us/token), both clamped at 0."""
    from controlplane.profiles import load_profile

    prof = load_profile(profile)
    xs, ys = [], []
    for p, ttft in probes:
        # idle P/D request: prefill (+ connector save) on P, then one decode step that
        # admits the remote KV (+ connector load) on D
        model_ms = prof.prefill_ms(p) + prof.kv_save_ms(p) + prof.decode_ms(1, p)
        model_ms += prof.kv_load_ms(p)
        xs.append(float(p))
        ys.append(ttft - model_ms)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    b = max(0.0, b)
    a = max(0.0, my - b * mx)
    return a, b * 1000.0


# ---------------------------------------------------------------- live stacks
@dataclass
class Stack:
    gateway: str
    children: list[Child]
    workdir: Path
    workers: dict[str, str] = field(default_factory=dict)


def _start(children: list[Child], name: str, argv: list[str], logs: Path,
           env: dict[str, str] | None = None) -> Child:  # fmt: skip
    c = Child(name, argv, logs / f"{name}.log", env=env or {}).start()
    children.append(c)
    return c


@contextlib.contextmanager
def live_stack(kind: str, profile: str, workdir: Path) -> Iterator[Stack]:
    """Private Redis, 1 prefill + 1 decode worker (``sim`` or ``vllm``) with agents, and
    the gateway; every child in its own process group, all stopped on exit."""
    logs = workdir / "logs"
    children: list[Child] = []
    cluster = f"validate-{uuid.uuid4().hex[:8]}"
    try:
        rport = free_port()
        rdir = Path(tempfile.mkdtemp(prefix="slaplane-validate-redis-"))
        _start(children, "redis", ["redis-server", "--port", str(rport), "--save", "",
                                   "--dir", str(rdir)], logs)  # fmt: skip
        redis_url = f"redis://127.0.0.1:{rport}/0"
        common = ["--cluster", cluster, "--redis-url", redis_url]
        urls: dict[str, str] = {}
        workers: list[tuple[str, Child]] = []
        kv = workdir / "kvstore"
        for role, core in (("prefill", "0"), ("decode", "1")):
            port = free_port()
            urls[role] = f"http://127.0.0.1:{port}"
            if kind == "sim":
                argv = slaplane_argv("sim-worker", "--role", role, "--port", str(port),
                                     "--profile", profile, "--worker-id", role)  # fmt: skip
            else:
                argv = slaplane_argv(
                    "worker", "--role", role, "--model", os.environ.get(
                        "SLAPLANE_TINY_MODEL", str(Path.home() / ".cache/slaplane/tiny-llama")),
                    "--served-model-name", MODEL, "--port", str(port), "--worker-id", role,
                    "--cpu-core", core, "--kv-connector", "example", "--kv-store-path", str(kv),
                    "--agent-interval-ms", "250", "--health-timeout-s", "300", *common,
                    *(f"--vllm-arg={a}" for a in VLLM_ARGS),
                )  # fmt: skip
            workers.append((role, _start(children, f"{kind}-{role}", argv, logs)))
        for role, child in workers:
            wait_http_ok(f"{urls[role]}/health", 300 if kind == "vllm" else 30, child)
            if kind == "sim":
                _start(children, f"agent-{role}", slaplane_argv(
                    "agent", "--worker-url", urls[role], "--worker-id", role, "--role", role,
                    "--interval-ms", "250", *common), logs)  # fmt: skip
        gport = free_port()
        gw = _start(children, "gateway", slaplane_argv(
            "gateway", "--port", str(gport), "--policy", "round_robin", "--profile", profile,
            "--admission-params", '{"predictive": {"enabled": false}}', "--no-require-key",
            *common), logs)  # fmt: skip
        gateway = f"http://127.0.0.1:{gport}"
        wait_http_ok(f"{gateway}/ready", 60, gw)
        deadline = time.monotonic() + 30
        while True:  # both workers' snapshots in the gateway's view
            with contextlib.suppress(OSError, ValueError):
                import urllib.request

                with urllib.request.urlopen(f"{gateway}/ready", timeout=2) as r:
                    if json.loads(r.read()).get("workers", 0) >= 2:
                        break
            if time.monotonic() > deadline:
                raise TimeoutError("gateway does not see both workers")
            time.sleep(0.25)
        yield Stack(gateway, children, workdir, urls)
    finally:
        for c in reversed(children):
            c.stop(timeout_s=30)


PD_PROFILE_ARGS = (
    "--prompt-lengths", "300,700,1400,2000", "--join-batches", "4", "--joins", "6",
    "--repeats", "5", "--decode-tokens", "256", "--pd-decode-points", "1x128,4x128,4x1024",
    "--co-load",
)  # fmt: skip
"""The P/D sweep: prompt lengths off the 128-token grid (ExampleConnector moves whole
blocks of ``L - 1`` tokens and the decode worker recomputes the rest, so multiples of
128 would always leave a full block to recompute); 6 joins per round into 4 streams of
256 tokens; the other engine kept busy while each point is measured (``--co-load``: under
the trace both engines work at once, and measured beside an idle partner the prefill
worker was ~2x faster than it ran under the trace)."""


def pd_profile_argv(prefill_url: str, decode_url: str, base: str, out: Path) -> list[str]:
    return slaplane_argv(
        "profile", "--prefill-url", prefill_url, "--decode-url", decode_url,
        "--base-profile", base, "--out", str(out), "--name", out.stem, "--fresh", "--quiet",
        "--json", str(out.with_suffix(".json")), *PD_PROFILE_ARGS,
    )  # fmt: skip


def measure_pd_profile(st: Stack, base: str, out: Path) -> Path:
    """``slaplane profile`` in P/D mode against the stack's own workers (not the trace)."""
    import subprocess

    argv = pd_profile_argv(st.workers["prefill"], st.workers["decode"], base, out)
    print("P/D profile: " + " ".join(argv[3:]), flush=True)
    t0 = time.monotonic()
    subprocess.run(argv, check=True, cwd=ROOT)
    print(f"P/D profile done in {time.monotonic() - t0:.0f} s -> {out}", flush=True)
    return out


def run_live(
    kind: str,
    trace: Trace,
    profile: str,
    workdir: Path,
    seed: int,
    calibrate: bool,
    measure_pd: bool = False,
) -> PathResult:
    with live_stack(kind, profile, workdir / kind) as st:
        load_before = os.getloadavg()
        pd_path = None
        if measure_pd and kind == "vllm":
            pd_path = measure_pd_profile(st, profile, workdir / kind / "pd-profile.csv")
        probes = asyncio.run(probe(st.gateway, MODEL, seed)) if calibrate else []
        res = asyncio.run(drive(st.gateway, MODEL, trace, seed, kind))
        dead = [c.name for c in st.children if not c.alive]
        res.extra["loadavg_before"] = load_before
        res.extra["loadavg_after"] = os.getloadavg()
    if pd_path is not None:
        res.extra["pd_profile"] = str(pd_path)
    if dead:  # a fallback path served the rest: the numbers do not describe P/D
        res.name += " (INVALID)"
        res.extra["dead"] = dead
        print(f"{kind}: {', '.join(dead)} died during the run; see {workdir / kind}/logs")
    if probes:
        a_ms, b_us = fit_overhead(probes, profile)
        res.extra.update(probes=probes, overhead_ms=a_ms, overhead_us_per_token=b_us)
        if pd_path is not None:
            a_ms, b_us = fit_overhead(probes, str(pd_path))
            res.extra.update(pd_overhead_ms=a_ms, pd_overhead_us_per_token=b_us)
    return res


# ---------------------------------------------------------------- report
def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def diff(model: float | None, live: float | None) -> float | None:
    """(replay - live) / live: negative = the model is optimistic."""
    if model is None or live is None or live == 0:
        return None
    return (model - live) / live


def comparison(
    results: Sequence[PathResult], tolerance: float | None = None
) -> tuple[list[str], list[list[str]]]:
    """Columns and rows: one row per metric, one column per path, then each replay's
    difference from each live path (marked ✗ outside ``tolerance``, when given)."""
    replays = [r for r in results if r.name.startswith("replay")]
    lives = [r for r in results if not r.name.startswith("replay")]
    head = ["metric", *[r.name for r in results]]
    head += [f"{a.name} vs {b.name}" for a in replays for b in lives]
    rows = []
    for m in ("ttft_ms", "tpot_ms"):
        for q in (50, 90):
            row = [f"{m.split('_')[0].upper()} p{q} (ms)"]
            row += [_f(r.pct(m, q)) for r in results]
            for a in replays:
                for b in lives:
                    d = diff(a.pct(m, q), b.pct(m, q))
                    off = tolerance is not None and d is not None and abs(d) > tolerance
                    row.append("-" if d is None else f"{100 * d:+.1f} %{' ✗' if off else ''}")
            rows.append(row)
    return head, rows


def table(results: Sequence[PathResult], tolerance: float = 0.15) -> str:
    """Markdown of ``comparison``, plus completed / errors per path."""
    head, rows = comparison(results, tolerance)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    n = ["completed / errors", *[f"{len(r.samples)} / {r.errors}" for r in results]]
    n += [""] * (len(head) - len(n))
    lines.append("| " + " | ".join(n) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", default="a,b", help="a = replay, b = live sim, c = live vLLM")
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--window", default="1890:1980", help="trace seconds START:END")
    ap.add_argument("--rate-scale", type=float, default=1.0)
    ap.add_argument("--max-prompt-tokens", type=int, default=MAX_PROMPT_TOKENS)
    ap.add_argument("--max-output-tokens", type=int, default=128)
    ap.add_argument("--profile", default="cpu-tiny", help="sim profile name or CSV")
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="probe each live stack idle; replay again with the fitted overhead",
    )
    ap.add_argument(
        "--kv-transfer-ms",
        type=float,
        default=0.0,
        help="fixed hand-off overhead for the replay (without --calibrate)",
    )
    ap.add_argument("--kv-transfer-us-per-token", type=float, default=0.0)
    ap.add_argument(
        "--measure-pd",
        action="store_true",
        help="(c) measure a P/D profile on the live vLLM pair first; replay on it too",
    )
    ap.add_argument(
        "--pd-profile", default=None, help="replay also on this P/D profile (name or CSV)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "validate")
    ap.add_argument(
        "--record", action="store_true", help="write benchmarks/results/model_validation.json"
    )
    args = ap.parse_args(argv)
    which = {x.strip() for x in args.run.split(",") if x.strip()}
    if not which or which - {"a", "b", "c"}:
        ap.error("--run takes a comma list of a, b, c")
    args.out.mkdir(parents=True, exist_ok=True)
    trace = make_slice(args.trace, args.window, args.rate_scale, args.max_prompt_tokens,
                       args.max_output_tokens)  # fmt: skip
    csv = write_azure_csv(trace, args.out / "slice.csv")
    print(f"slice: {trace.name}: {len(trace.requests)} requests over {trace.duration_s:.1f} s "
          f"({trace.mean_rate_rps:.2f} req/s) -> {csv}", flush=True)  # fmt: skip
    results: list[PathResult] = []
    if "a" in which:
        results.append(run_replay(csv, args.profile, args.kv_transfer_ms,
                                  args.kv_transfer_us_per_token))  # fmt: skip
        if args.pd_profile:
            pd = run_replay(csv, args.pd_profile, args.kv_transfer_ms,
                            args.kv_transfer_us_per_token)  # fmt: skip
            pd.name = "replay+pd"
            results.append(pd)
    for key, kind in (("b", "sim"), ("c", "vllm")):
        if key not in which:
            continue
        print(f"live {kind} stack ...", flush=True)
        res = run_live(kind, trace, args.profile, args.out, args.seed, args.calibrate,
                       measure_pd=args.measure_pd)  # fmt: skip
        results.append(res)
        pd_prof = res.extra.get("pd_profile")
        if pd_prof and "a" in which:
            pd = run_replay(csv, pd_prof)
            pd.name = "replay+pd"
            results.append(pd)
        if args.calibrate and "a" in which:
            a_ms, b_us = res.extra["overhead_ms"], res.extra["overhead_us_per_token"]
            print(f"{kind}: calibrated hand-off {a_ms:.1f} ms + {b_us:.2f} us/token", flush=True)
            cal = run_replay(csv, args.profile, a_ms, b_us)
            cal.name = f"replay+cal({kind})"
            results.append(cal)
            if pd_prof:
                a_ms, b_us = res.extra["pd_overhead_ms"], res.extra["pd_overhead_us_per_token"]
                print(f"{kind}: hand-off over the P/D profile {a_ms:.1f} ms + {b_us:.2f} us/token",
                      flush=True)  # fmt: skip
                cal = run_replay(csv, pd_prof, a_ms, b_us)
                cal.name = "replay+pd+cal"
                results.append(cal)
    md = table(results)
    print(md)
    for r in results:
        if "loadavg_before" in r.extra:
            b, a = r.extra["loadavg_before"], r.extra["loadavg_after"]
            print(f"{r.name}: load average {b[0]:.1f}/{b[1]:.1f}/{b[2]:.1f} before the stack's "
                  f"probes, {a[0]:.1f}/{a[1]:.1f}/{a[2]:.1f} after the trace; client send lag "
                  f"p50 {r.extra.get('send_lag_ms_p50', 0):.1f} ms, "
                  f"max {r.extra.get('send_lag_ms_max', 0):.0f} ms")  # fmt: skip
    doc = {
        "slice": {"trace": str(args.trace), "window": args.window, "rate_scale": args.rate_scale,
                  "requests": len(trace.requests), "duration_s": trace.duration_s,
                  "max_prompt_tokens": args.max_prompt_tokens,
                  "max_output_tokens": args.max_output_tokens, "csv": str(csv)},
        "profile": args.profile,
        "argv": sys.argv,
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": [r.to_json() for r in results],
        "samples": {r.name: [asdict(s) for s in r.samples] for r in results},
        "table": md,
    }  # fmt: skip
    (args.out / "validate.json").write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out / 'validate.json'}")
    if args.record:
        print(f"wrote {write_result(page_result(results, trace, args))}")
    return 0


def page_result(results: Sequence[PathResult], trace: Trace, args: argparse.Namespace) -> Result:
    """The results-page section: each replay against each live path, p50/p90, 15 % goal."""
    replays = [r for r in results if r.name.startswith("replay")]
    lives = [r for r in results if not r.name.startswith("replay")]
    cols, rows = comparison(results)
    head: list[Headline] = []
    cond = (f"{len(trace.requests)} requests, window {args.window} x{args.rate_scale}, "
            f"profile {args.profile}, 1P+1D")  # fmt: skip
    for b in lives:
        best = None
        for a in replays:
            d = diff(a.pct("tpot_ms", 50), b.pct("tpot_ms", 50))
            t = diff(a.pct("ttft_ms", 50), b.pct("ttft_ms", 50))
            if d is not None and t is not None and (best is None or abs(t) < abs(best[1])):
                best = (a, t, d)
        if best is None:
            continue
        a, t, d = best
        head.append(Headline(
            question=f"Does the replay predict the live {b.name} stack?",
            metric="TTFT / TPOT p50 error",
            slaplane=f"{a.name}: {100 * t:+.0f} % / {100 * d:+.0f} %",
            baseline=f"live {b.name}: {_f(b.pct('ttft_ms', 50))} / {_f(b.pct('tpot_ms', 50))} ms",
            goal="within 15 %", met=abs(t) <= 0.15 and abs(d) <= 0.15, conditions=cond,
        ))  # fmt: skip
    notes = [
        f"{r.name}: load average {r.extra['loadavg_before'][0]:.1f} before, "
        f"{r.extra['loadavg_after'][0]:.1f} after; {len(r.samples)} done, {r.errors} errors"
        for r in lives
        if "loadavg_before" in r.extra
    ]
    return Result(
        section="model_validation", order=35, title="Model validation: replay vs live stacks",
        question="Is the replay's worker model close to what the live sim and vLLM stacks do "
        "on the same requests (client-side TTFT/TPOT, `vllm bench` definitions)?",
        headline=head, tables=[Table("", cols, rows)], notes=notes,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
