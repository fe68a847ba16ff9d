"""Replay: goodput per routing policy on both shared traces, and replay speed.

Goodput (section ``replay_goodput``): each shared trace (Azure code, 57 min, 8,819
requests; Mooncake synthetic, 17 min, 3,993 long-prompt requests) on 2P+2D workers
with the h100 profile, one SLA (TTFT 2 s, TPOT 50 ms), seed 0 (``slaplane replay``'s
defaults). Per policy: attainment at 1x, the highest rate scale at which >= 90 % of
requests meet the SLA (``--sweep-rate``'s bisection), goodput there (req/s, and per GPU)
with admission on, and the same scale with admission off (routing alone). Headline: the
best policy vs round_robin per trace, goodput at each one's highest 90 % scale.

Speed (issue 6's budget: a 1-hour trace on 8 workers in < 60 s): wall time, simulated
seconds per wall second and engine steps of one run per policy for ``SPEED_CASES``.

    .venv/bin/python benchmarks/bench_replay.py [--jobs 2] [--record]

``--record`` writes the ``replay_goodput`` results section (default: print only).

One goodput row with the CLI:

    .venv/bin/slaplane replay --trace data/traces/AzureLLMInferenceTrace_code.csv \\
        --policies round_robin,sla --sweep-rate [--no-admission]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.results_io import Headline, Result, Table, fmt, write_result  # noqa: E402
from controlplane.replay.experiment import Options, build_experiment  # noqa: E402
from controlplane.replay.runner import Experiment, run_once, sweep_rate  # noqa: E402

AZURE, MOONCAKE = "AzureLLMInferenceTrace_code.csv", "synthetic_trace.jsonl"
TRACES: dict[str, str] = {"Azure code": AZURE, "Mooncake": MOONCAKE}
POLICIES = "round_robin,least_loaded,kv_aware,sla"
PREFILL, DECODE = 2, 2
TTFT_MS, ITL_MS = 2000.0, 50.0
TARGET = 0.9
GOAL_RATIO = 1.5
"""Issue 6's goal: the best policy's goodput >= 1.5x round_robin's."""
SPEED_COLUMNS = (
    "trace", "cluster", "scale", "policy", "requests", "simulated s", "wall s", "sim/wall", "steps",
)  # fmt: skip
# (trace, prefill, decode, mixed workers, rate scale)
SPEED_CASES = (
    (AZURE, 4, 4, 0, 1.0),
    (AZURE, 0, 0, 8, 1.0),
    (AZURE, 4, 4, 0, 4.0),
    (MOONCAKE, 4, 4, 0, 1.0),
)


@cache
def experiment(
    trace: str, prefill: int, decode: int, workers: int, admission: bool, profile: str
) -> Experiment:
    opts = Options(
        ROOT / "data/traces" / trace,
        ttft_ms=TTFT_MS,
        itl_ms=ITL_MS,
        prefill=prefill,
        decode=decode,
        workers=workers,
        profile=profile,
        admission=admission,
    )
    return build_experiment(opts)


@dataclass(frozen=True, slots=True)
class Point:
    """One policy's sweep on one trace."""

    trace: str
    policy: str
    admission: bool
    max_scale: float
    goodput_rps: float
    goodput_per_gpu: float
    attainment_1x: float | None
    runs: int


def sweep(args: tuple[str, str, bool, str]) -> Point:
    trace, policy, admission, profile = args
    exp = experiment(TRACES[trace], PREFILL, DECODE, 0, admission, profile)
    r = sweep_rate(exp, policy, target=TARGET)
    at_1x = next((a for s, a, _ in r.points if s == 1.0), None)
    gpus = exp.base.shape.gpus
    return Point(
        trace, policy, admission, r.max_rate_scale, r.goodput_rps, r.goodput_rps / gpus,
        at_1x, len(r.points),
    )  # fmt: skip


def speed(args: tuple[tuple[str, int, int, int, float], str, str]) -> list[Any]:
    (trace, p, d, k, scale), policy, profile = args
    exp = experiment(trace, p, d, k, True, profile)
    s, r = run_once(exp, policy, scale)
    return [
        trace, exp.base.shape.label(), f"{scale:g}", policy, s.offered, f"{r.sim_end_s:,.0f}",
        f"{r.wall_s:.2f}", f"{r.sim_end_s / r.wall_s:,.0f}", f"{r.engine_steps:,}",
    ]  # fmt: skip


T = TypeVar("T")
R = TypeVar("R")


def pmap(fn: Callable[[T], R], items: Sequence[T], jobs: int) -> list[R]:
    if jobs <= 1:
        return [fn(x) for x in items]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return list(pool.map(fn, items))


def goodput_table(points: Sequence[Point], policies: Sequence[str]) -> Table:
    by = {(p.trace, p.policy, p.admission): p for p in points}
    rows = []
    for trace in TRACES:
        rr_on, rr_off = by.get((trace, "round_robin", True)), by.get((trace, "round_robin", False))
        for pol in policies:
            on, off = by[trace, pol, True], by[trace, pol, False]
            rows.append(
                [
                    trace,
                    pol,
                    "-" if on.attainment_1x is None else f"{100 * on.attainment_1x:.1f} %",
                    f"x{on.max_scale:.3g}",
                    fmt(on.goodput_rps),
                    fmt(on.goodput_per_gpu),
                    ratio(on.goodput_rps, rr_on.goodput_rps if rr_on else None),
                    f"x{off.max_scale:.3g}",
                    fmt(off.goodput_rps),
                    ratio(off.goodput_rps, rr_off.goodput_rps if rr_off else None),
                ]
            )
    return Table(
        title=f"Goodput per policy: {PREFILL}P+{DECODE}D, TTFT 2 s / TPOT 50 ms, whole traces",
        columns=[
            "trace",
            "policy",
            "attainment at 1x",
            "max scale >= 90 %",
            "goodput there (req/s)",
            "per GPU",
            "vs round_robin",
            "max scale, no admission",
            "goodput there",
            "vs round_robin, no admission",
        ],
        rows=rows,
        note="Max scale: highest rate multiplier with >= 90 % of all requests meeting the "
        "SLA (rejected = missed). Admission (predictive rejection, displacement) is the "
        "gateway's and applies to every policy; 'no admission' is routing alone.",
    )


def summary_table(points: Sequence[Point], policies: Sequence[str]) -> Table:
    """The page's table (at most 6 rows): per trace and admission setting, each policy's
    highest 90 % scale and goodput there, and the best against round_robin."""
    by = {(p.trace, p.policy, p.admission): p for p in points}
    rows = []
    for trace in TRACES:
        for adm in (True, False):
            mine = [by[trace, pol, adm] for pol in policies]
            best = max(mine, key=lambda p: p.goodput_rps)
            rr = by.get((trace, "round_robin", adm))
            rows.append(
                [
                    trace,
                    "on" if adm else "off",
                    *(f"x{p.max_scale:.3g}, {fmt(p.goodput_rps)}" for p in mine),
                    f"{best.policy} {ratio(best.goodput_rps, rr.goodput_rps if rr else None)}",
                ]
            )
    return Table(
        title="Highest rate scale with >= 90 % in SLA, and goodput there (req/s): "
        f"{PREFILL}P+{DECODE}D h100, TTFT 2 s / TPOT 50 ms, whole traces",
        columns=["trace", "admission", *policies, "best vs round_robin"],
        rows=rows,
        note="Rejected requests count as missed. Admission (predictive rejection, "
        "displacement) is the gateway's and applies to every policy; 'off' is routing alone. "
        "Per-policy detail (attainment at 1x, per GPU) and replay speed follow in the JSON.",
    )


def ratio(x: float, base: float | None) -> str:
    return f"{x / base:.2f}x" if base else "-"


def headlines(points: Sequence[Point]) -> list[Headline]:
    out = []
    for trace in TRACES:
        mine = [p for p in points if p.trace == trace and p.admission]
        rr = next((p for p in mine if p.policy == "round_robin"), None)
        if rr is None or not mine:
            continue
        best = max(mine, key=lambda p: p.goodput_rps)
        r = best.goodput_rps / rr.goodput_rps if rr.goodput_rps else None
        out.append(
            Headline(
                question=f"Best routing policy vs round_robin, whole trace ({trace})",
                metric="goodput req/s at the highest rate scale with >= 90 % in SLA",
                slaplane=f"{best.policy} {fmt(best.goodput_rps)} at x{best.max_scale:.3g}"
                + ("" if r is None else f" ({r:.2f}x)"),
                baseline=f"round_robin {fmt(rr.goodput_rps)} at x{rr.max_scale:.3g}",
                goal=f">= {GOAL_RATIO:g}x round_robin (issue 6)",
                met=None if r is None else r >= GOAL_RATIO,
                conditions=f"{PREFILL}P+{DECODE}D h100, TTFT 2 s / TPOT 50 ms, admission on "
                "for every policy",
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", default=POLICIES)
    ap.add_argument("--profile", default="h100-llama3.1-8b")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes for the sweeps")
    ap.add_argument("--no-speed", dest="speed", action="store_false")
    ap.add_argument(
        "--record", action="store_true", help="write benchmarks/results/replay_goodput.json"
    )
    a = ap.parse_args(argv)
    pols = [p for p in a.policies.split(",") if p]
    t0 = time.perf_counter()
    tasks = [(t, p, adm, a.profile) for t in TRACES for p in pols for adm in (True, False)]
    points = pmap(sweep, tasks, a.jobs)
    good = goodput_table(points, pols)
    tables = [summary_table(points, pols), good]
    for t in tables:
        print(f"\n{t.title}\n| {' | '.join(t.columns)} |")
        for row in t.rows:
            print(f"| {' | '.join(map(str, row))} |", flush=True)
    runs = sum(p.runs for p in points)
    print(f"\n{runs} goodput runs, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if a.speed:
        load = os.getloadavg()[0]
        rows = [speed((c, p, a.profile)) for c in SPEED_CASES for p in pols]  # one at a time
        tables.append(
            Table(
                title="Replay speed (one run per policy, one core)",
                columns=SPEED_COLUMNS,
                rows=rows,
                note=f"Load average {load:.1f} at the start on {os.cpu_count()} cores: wall "
                "times on a shared host are upper bounds. Budget (issue 6): a 1-hour trace "
                "on 8 workers in < 60 s.",
            )
        )
        for row in rows:
            print(f"| {' | '.join(map(str, row))} |", flush=True)
    if not a.record:
        return
    path = write_result(
        Result(
            section="replay_goodput",
            title="Goodput per routing policy (trace replay)",
            question="On the shared traces, how much load does each routing policy carry "
            "within SLA, with the gateway's admission and without it?",
            headline=headlines(points),
            tables=tables,
            notes=[
                "Whole traces, which the defaults were chosen on; for figures on traffic the "
                "tuning never saw see policy_generalization.",
            ],
            order=20,
        )
    )
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
