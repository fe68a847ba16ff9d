"""Why DynoSim's P/D TTFT is so much worse than slaplane's under the same step tables:
both simulators on the same requests, joined request by request.

Runs DynoSim (``--report-jsonl``) and slaplane's replay (``emulate.TracedDriver``) on
one trace at one rate, 2P+2D, round robin, admission off, and joins the requests on
(arrival, prompt, output). Each TTFT is split into queue before prefill, prefill
(scheduled → hand-off to decode) and hand-off → first token; slaplane is also run with
DynoSim 1.4.2's prefill hold modelled (``emulate.DynoHoldDriver``). A controlled case
(two prompts on 1P+1D) shows the hold directly. Writes a markdown section.

    .venv/bin/python -m benchmarks.dynosim.perrequest [--scale 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[2]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.dynosim import dynamo_run
from benchmarks.dynosim.emulate import Stages, run_traced
from controlplane.replay.accounting import OK, Outcome
from controlplane.replay.experiment import Options, build_experiment
from controlplane.replay.traces import read_trace

ROOT = Path(__file__).resolve().parents[2]
MOONCAKE = ROOT / "data/traces/synthetic_trace.jsonl"


@dataclass(slots=True)
class Joined:
    """One request in both simulators (times in ms from its arrival)."""

    index: int
    prompt: int
    output: int
    dyn: dict[str, Any] | None
    sl: Outcome
    sl_st: Stages | None
    hold: Outcome
    hold_st: Stages | None


def join_rows(
    trace_path: Path, scale: float, rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any] | None]:
    """DynoSim's per-request rows in slaplane's trace order (None: not in the report).
    Key: arrival (trace ms), prompt and output length; ties keep DynoSim's admit order."""
    by: dict[tuple[int, int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = (
            round(r["arrival_time_ms"] * scale),
            r["input_length"],
            r["requested_output_length"],
        )
        by[key].append(r)
    for v in by.values():
        v.sort(key=lambda r: r.get("first_admit_ms") or 0.0)
    out: list[dict[str, Any] | None] = []
    for t in read_trace(trace_path).requests:
        lst = by.get((round(t.arrival_s * 1000), t.prompt_tokens, t.output_tokens))
        out.append(lst.pop(0) if lst else None)
    return out


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else 1000.0 * (a - b)


def _sl_split(o: Outcome, st: Stages | None) -> tuple[float, float, float, float] | None:
    """(queue, prefill compute, hold, hand-off → first token) in ms, or None."""
    if st is None or o.status != OK or o.ttft_s is None:
        return None
    q = _ms(st.prefill_scheduled_s, o.arrival_s)
    comp = _ms(st.prompt_done_s, st.prefill_scheduled_s)
    hold = _ms(st.handoff_s, st.prompt_done_s)
    rest = _ms(o.arrival_s + o.ttft_s, st.handoff_s)
    if q is None or comp is None or hold is None or rest is None:
        return None
    return q, comp, hold, rest


def _dyn_split(d: dict[str, Any] | None) -> tuple[float, float, float] | None:
    """(queue, prefill incl. any hold, hand-off → first token) in ms, or None."""
    if d is None or d.get("terminal_status") != "completed" or d.get("source_held_ms") is None:
        return None
    a = d["arrival_time_ms"]
    return (
        d["prefill_admit_ms"] - a,
        d["source_held_ms"] - d["prefill_admit_ms"],
        d["first_token_ms"] - d["source_held_ms"],
    )


def _med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def controlled(npz: Path, profile: str, work: Path) -> list[list[str]]:
    """Hand-off time of one prompt on 1P+1D, alone or ahead of a 40,160-token prompt
    arriving 10 ms later, by the first prompt's output length."""
    cases = [
        ("40,160-token prompt alone", [(0, 40160, 4)]),
        ("8,192 prompt, 1 output token; a 40,160 one 10 ms later", [(0, 8192, 1), (10, 40160, 4)]),
        ("same, 2 output tokens", [(0, 8192, 2), (10, 40160, 4)]),
        ("same, 50 output tokens", [(0, 8192, 50), (10, 40160, 4)]),
    ]  # fmt: skip
    out: list[list[str]] = []
    hid = 1_000_000
    for k, (label, reqs) in enumerate(cases):
        path = work / f"controlled-{k}.jsonl"
        lines = []
        for ts, n, o in reqs:
            nb = -(-n // 512)
            lines.append(
                json.dumps(
                    {
                        "timestamp": ts,
                        "input_length": n,
                        "output_length": o,
                        "hash_ids": list(range(hid, hid + nb)),
                    }
                )
            )
            hid += nb
        path.write_text("\n".join(lines) + "\n")
        dyn = dynamo_run.run(path, npz, profile, work, prefill=1, decode=1, tag=f"ctl{k}")
        assert dyn.rows is not None
        first = min(dyn.rows, key=lambda r: (r["arrival_time_ms"], r["input_length"] != reqs[0][1]))
        cells = [label, f"{first['source_held_ms']:.1f}"]
        exp = build_experiment(Options(trace=path, prefill=1, decode=1, profile=profile,
                                       admission=False))  # fmt: skip
        for hold in (False, True):
            _, _, stages = run_traced(exp, "round_robin", 1.0, hold=hold)
            h = stages["0"].handoff_s
            cells.append("-" if h is None else f"{1000 * h:.1f}")
        out.append(cells)
    return out


def analyse(
    trace_path: Path,
    npz: Path,
    profile: str,
    work: Path,
    scale: float,
    ttft_ms: float = 2000.0,
    itl_ms: float = 50.0,
) -> tuple[str, str]:
    """The markdown section (headline shares, mean stage times, the requests only
    DynoSim misses, per-request agreement of the hold model, the controlled case) and
    a one-line summary for the results page."""
    dyn = dynamo_run.run(trace_path, npz, profile, work, prefill=2, decode=2, scale=scale,
                         ttft_ms=ttft_ms, itl_ms=itl_ms, tag="perreq")  # fmt: skip
    assert dyn.rows is not None
    drows = join_rows(trace_path, scale, dyn.rows)
    exp = build_experiment(Options(trace=trace_path, prefill=2, decode=2, profile=profile,
                                   ttft_ms=ttft_ms, itl_ms=itl_ms, admission=False))  # fmt: skip
    s_sl, r_sl, st_sl = run_traced(exp, "round_robin", scale)
    s_h, r_h, st_h = run_traced(exp, "round_robin", scale, hold=True)
    rows = [
        Joined(
            o.index,
            o.prompt_tokens,
            o.output_tokens,
            d,
            o,
            st_sl.get(str(o.index)),
            h,
            st_h.get(str(o.index)),
        )
        for o, h, d in zip(r_sl.outcomes, r_h.outcomes, drows, strict=True)
    ]
    n = len(rows)
    lim = ttft_ms / 1000.0

    def miss_sl(o: Outcome) -> bool:
        return o.status != OK or o.ttft_s is None or o.ttft_s > lim

    def miss_dyn(d: dict[str, Any] | None) -> bool:
        return d is None or d.get("terminal_status") != "completed" or d["ttft_ms"] > ttft_ms

    md = sum(miss_dyn(j.dyn) for j in rows)
    ms_ = sum(miss_sl(j.sl) for j in rows)
    mh = sum(miss_sl(j.hold) for j in rows)
    both = [j for j in rows if _dyn_split(j.dyn) and _sl_split(j.sl, j.sl_st)
            and _sl_split(j.hold, j.hold_st)]  # fmt: skip
    d_split = [_dyn_split(j.dyn) for j in both]
    s_split = [_sl_split(j.sl, j.sl_st) for j in both]
    h_split = [_sl_split(j.hold, j.hold_st) for j in both]

    def col(xs: Sequence[Any], i: int) -> list[float]:
        return [x[i] for x in xs if x is not None]

    only_dyn = [j for j in both if miss_dyn(j.dyn) and not miss_sl(j.sl)]
    od_h = [_sl_split(j.hold, j.hold_st) for j in only_dyn]
    agree = [
        abs(j.dyn["ttft_ms"] - 1000 * j.hold.ttft_s)
        for j in both
        if j.dyn is not None and j.hold.ttft_s is not None
    ]
    same_side = sum(miss_dyn(j.dyn) == miss_sl(j.hold) for j in rows) / n
    same_admit = sum(
        1 for j in both
        if j.dyn is not None and j.hold_st is not None and j.hold_st.prefill_scheduled_s is not None
        and abs(j.dyn["prefill_admit_ms"] - 1000 * j.hold_st.prefill_scheduled_s) < 1.0
    ) / max(1, len(both))  # fmt: skip
    reuse_dyn = sum(int(j.dyn.get("reused_input_tokens") or 0) for j in rows if j.dyn)
    reuse_sl = sum(j.sl.cached_tokens for j in rows)
    prompt_total = sum(j.prompt for j in rows)
    ctl = controlled(npz, profile, work)
    name = read_trace(trace_path).name
    att = dyn.report["goodput_completed_requests"] / dyn.report["num_requests"]
    lines = [
        f"## Per request: {name} x{scale:g}, 2P+2D, round robin, admission off, physics mocker",
        "",
        f"{n} requests, same arrivals, same step tables, joined on (arrival, prompt, output);"
        f" TTFT target {ttft_ms:g} ms.",
        "",
        "| | DynoSim 1.4.2 | slaplane | slaplane + DynoSim's prefill hold |",
        "|---|---:|---:|---:|",
        f"| TTFT > {ttft_ms:g} ms (or not served) | {100 * md / n:.1f}% | {100 * ms_ / n:.1f}%"
        f" | {100 * mh / n:.1f}% |",
        f"| attainment {ttft_ms:g}/{itl_ms:g} | {100 * att:.1f}% | {100 * s_sl.attainment:.1f}%"
        f" | {100 * s_h.attainment:.1f}% |",
        f"| mean queue before prefill (ms) | {_mean(col(d_split, 0)):.0f}"
        f" | {_mean(col(s_split, 0)):.0f} | {_mean(col(h_split, 0)):.0f} |",
        f"| mean prefill: scheduled → hand-off (ms) | {_mean(col(d_split, 1)):.0f}"
        f" | {_mean([a + b for a, b in zip(col(s_split, 1), col(s_split, 2), strict=True)]):.0f}"
        f" | {_mean([a + b for a, b in zip(col(h_split, 1), col(h_split, 2), strict=True)]):.0f} |",
        f"| … of which held after the prompt was done (ms) | ? | {_mean(col(s_split, 2)):.0f}"
        f" | {_mean(col(h_split, 2)):.0f} |",
        f"| mean hand-off → first token (ms) | {_mean(col(d_split, 2)):.1f}"
        f" | {_mean(col(s_split, 3)):.1f} | {_mean(col(h_split, 3)):.1f} |",
        f"| prompt tokens from prefix cache | {100 * reuse_dyn / prompt_total:.1f}%"
        f" | {100 * reuse_sl / prompt_total:.1f}% | |",
        "",
        f"{len(only_dyn)} requests miss TTFT in DynoSim but not in slaplane: median TTFT "
        f"{_med([j.dyn['ttft_ms'] for j in only_dyn if j.dyn]):.0f} ms vs "
        f"{_med([1000 * j.sl.ttft_s for j in only_dyn if j.sl.ttft_s is not None]):.0f} ms; "
        f"median output {_med([float(j.output) for j in only_dyn]):.0f} tokens; with the hold "
        f"modelled their median hold is {_med(col(od_h, 2)):.0f} ms. Hold model vs DynoSim, "
        f"request by request: |ΔTTFT| median {_med(agree):.1f} ms, p90 "
        f"{sorted(agree)[int(0.9 * (len(agree) - 1))]:.0f} ms; same side of the TTFT target "
        f"{100 * same_side:.1f}%; prefill scheduled at the same moment (±1 ms) "
        f"{100 * same_admit:.1f}%.",
        "",
        "Controlled case, 1P+1D: when the first prompt's prefill worker hands it to decode (ms)",
        "",
        "| case | DynoSim 1.4.2 | slaplane | slaplane + hold |",
        "|---|---:|---:|---:|",
        *[f"| {' | '.join(r)} |" for r in ctl],
        "",
        "Verdict: DynoSim is wrong here. Its offline P/D builds the prefill-stage request with",
        "`max_output_tokens = 1`, then its vLLM scheduler swaps in the trace's planned output",
        "(log: `planned output token count differs from max_output_tokens; using planned",
        "count requested=1 planned=N`), so the prefill worker decodes the whole output (free",
        "on a prefill worker, but one pass per token, and a pass costs a 200 ms chunk while",
        "other prompts prefill) before the hand-off. vLLM P/D frees the prefill request after",
        "one token, as slaplane's replay does; upstream fixed it in ai-dynamo/dynamo PR #13052.",
        "",
        "Checked and equal: the charge of a prefill step (a lone 40,160-token prompt above),",
        "chunking (8,192-token budget, FCFS: the prefill-scheduled times above), KV transfer",
        "(neither charges one: DynoSim gets no `kv_transfer_bandwidth`, slaplane's",
        "`kv_transfer_*` are 0; hand-off → first token above), decode admission (DynoSim",
        "loads the prompt's KV in 8,192-token passes at no prefill cost, slaplane in one step;",
        "both then pay one decode step), prefix caching (above). Still different: a step that",
        "mixes prefill and decode costs prefill + decode in the mocker, and prefill + decode -",
        "min(base step, ...) (~6 ms less) in slaplane's engine (aggregated workers only); and",
        "DynoSim's KV router is not bit-for-bit repeatable (±0.5% attainment between runs).",
        "",
    ]
    summary = (
        f"Why P/D differs: DynoSim {dynamo_run.VERSION} holds a finished prefill until its "
        f"worker has decoded the whole output (ai-dynamo/dynamo#13052). {name} x{scale:g}, round "
        f"robin, TTFT > {ttft_ms:g} ms: DynoSim {100 * md / n:.1f}%, slaplane "
        f"{100 * ms_ / n:.1f}%, slaplane with that hold {100 * mh / n:.1f}% (same verdict on "
        f"{100 * same_side:.1f}% of requests)."
    )
    return "\n".join(lines), summary


def main() -> None:
    from benchmarks.dynosim.compare import aligned_profile
    from benchmarks.dynosim.make_npz import build

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="h100-llama3.1-8b")
    ap.add_argument("--trace", type=Path, default=MOONCAKE)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prof = aligned_profile(a.profile, "mocker", work)
        npz = build(prof, work / "perf.npz")
        text, summary = analyse(a.trace, npz, prof, work, a.scale)
    print(text)
    print(summary)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
