"""Cost of one controller tick (``ControlPlanner.on_tick``) by cluster size.

Workers half prefill / half decode with some queue, tenants spread over the three
priorities, ``--records`` finished requests per tick; 1 tick = 1 virtual second. Each
tick is timed in process CPU time (what the controller's core pays, less sensitive to
other jobs on a shared machine) and wall time. A cost report, not a pass/fail: the
machine (CPU model, load average) goes with the figures. ``--record`` writes the
``controller_tick`` results section.

    .venv/bin/python benchmarks/bench_controller_tick.py --record
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.results_io import Headline, Result, Table, write_result  # noqa: E402
from controlplane.policy.control_fields import ControlState  # noqa: E402
from controlplane.policy.planner.control_planner import (  # noqa: E402
    ControlPlanner,
    ControlPolicyConfig,
)
from controlplane.policy.planner.scale import EngineLimits  # noqa: E402
from controlplane.policy.planner.types import TickInput  # noqa: E402
from controlplane.policy.predictor import ProfilePredictor  # noqa: E402
from controlplane.profiles import load_profile  # noqa: E402
from controlplane.schemas import Priority, RequestRecord, TenantSLA, WorkerSnapshot  # noqa: E402

PRIOS = (Priority.PREMIUM, Priority.STANDARD, Priority.BATCH)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def measure(n: int, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """(CPU ms, wall ms) of each of ``args.ticks`` ticks with ``n`` workers."""
    prof = load_profile("h100-llama3.1-8b")
    tenants = {f"t{i}": TenantSLA(tenant=f"t{i}", priority=PRIOS[i % 3], ttft_ms=500.0 + 100 * i)
               for i in range(args.tenants)}  # fmt: skip
    cp = ControlPlanner(ControlPolicyConfig(), ProfilePredictor(prof), prof,
                        EngineLimits(prof.kv_capacity_tokens, prof.max_num_seqs))  # fmt: skip
    ctl = ControlState()
    cpu, wall = [], []
    for k in range(args.ticks):
        now = 1000.0 + k
        ws = {f"w{i}": WorkerSnapshot("c", f"w{i}", "prefill" if i % 2 else "decode", "m",
                                      ts_ms=int(now * 1000), running=i % 7, waiting=i % 3,
                                      kv_usage=(i % 10) / 10, seq=k)
              for i in range(n)}  # fmt: skip
        recs = [RequestRecord(f"r{k}-{j}", f"t{j % args.tenants}", "m", 0, "ok",
                              prompt_tokens=1000, output_tokens=100, predicted_ttft_ms=80.0,
                              ttft_ms=90.0, tpot_ms=12.0)
                for j in range(args.records)]  # fmt: skip
        c0, t0 = time.process_time(), time.perf_counter()
        eff = cp.on_tick(TickInput(now, ws, tenants, recs, ctl))
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        ctl = ControlState(eff.route_weights, eff.draining, eff.admit, ctl.version + 1)
    return cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="8,64,256")
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--ticks", type=int, default=60)
    ap.add_argument(
        "--record", action="store_true", help="write benchmarks/results/controller_tick.json"
    )
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    cols = ["workers", "CPU p50 ms", "CPU p99 ms", "wall p50 ms", "wall p99 ms", "wall max ms"]
    print(f"tenants={args.tenants} records/tick={args.records} ticks={args.ticks}")
    print("| " + " | ".join(cols) + " |")
    rows: list[list[object]] = []
    cpu_p50: list[float] = []
    for n in (int(x) for x in args.sizes.split(",")):
        cpu, wall = measure(n, args)
        cpu_p50.append(statistics.median(cpu))
        rows.append([n, round(statistics.median(cpu), 2), round(pct(cpu, 0.99), 2),
                     round(statistics.median(wall), 2), round(pct(wall, 0.99), 2),
                     round(max(wall), 2)])  # fmt: skip
        print("| " + " | ".join(map(str, rows[-1])) + " |", flush=True)
    load = max(load_before, os.getloadavg()[0])
    machine = f"{cpu_model()}, {os.cpu_count()} cores, 1-min load average up to {load:.1f}"
    big = rows[-1]
    result = Result(
        section="controller_tick",
        title="Cost of one controller tick",
        question="How much CPU does one `ControlPlanner.on_tick` take as the cluster grows?",
        headline=[
            Headline(
                question="What does one controller tick cost?",
                metric=f"CPU ms per tick at {big[0]} workers (p50 / p99)",
                slaplane=f"{big[1]} / {big[2]} ms",
                baseline="-",
                goal="- (a cost, reported; ticks run every 1-5 s)",
                met=None,
                conditions=f"{args.tenants} tenants, {args.records} finished requests per tick, "
                f"h100 profile, {args.ticks} ticks; {machine}",
            )
        ],
        tables=[Table(f"Per tick, by cluster size ({machine})", cols, rows)],
        notes=[
            f"From {rows[0][0]} to {big[0]} workers the CPU median grows "
            f"x{cpu_p50[-1] / cpu_p50[0]:.1f}. Wall time includes waiting for the CPU "
            "when other jobs share the machine; CPU time is the tick's own."
        ],
        order=70,
    )
    if args.record:
        print(write_result(result))


if __name__ == "__main__":
    main()
