"""Cost of one controller tick (``ControlPlanner.on_tick``) by cluster size.

Workers half prefill / half decode with some queue, tenants spread over the three
priorities, ``--records`` finished requests per tick; 1 tick = 1 virtual second.

    .venv/bin/python benchmarks/bench_controller_tick.py
"""

from __future__ import annotations

import argparse
import statistics
import time

from controlplane.policy.control_fields import ControlState
from controlplane.policy.planner.control_planner import ControlPlanner, ControlPolicyConfig
from controlplane.policy.planner.scale import EngineLimits
from controlplane.policy.planner.types import TickInput
from controlplane.policy.predictor import ProfilePredictor
from controlplane.profiles import load_profile
from controlplane.schemas import Priority, RequestRecord, TenantSLA, WorkerSnapshot

PRIOS = (Priority.PREMIUM, Priority.STANDARD, Priority.BATCH)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="8,64,256")
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--ticks", type=int, default=60)
    args = ap.parse_args()
    prof = load_profile("h100-llama3.1-8b")
    tenants = {f"t{i}": TenantSLA(tenant=f"t{i}", priority=PRIOS[i % 3], ttft_ms=500.0 + 100 * i)
               for i in range(args.tenants)}  # fmt: skip
    print(f"tenants={args.tenants} records/tick={args.records} ticks={args.ticks}")
    print("| workers | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for n in (int(x) for x in args.sizes.split(",")):
        cp = ControlPlanner(ControlPolicyConfig(), ProfilePredictor(prof), prof,
                            EngineLimits(prof.kv_capacity_tokens, prof.max_num_seqs))  # fmt: skip
        ctl = ControlState()
        times = []
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
            t0 = time.perf_counter()
            eff = cp.on_tick(TickInput(now, ws, tenants, recs, ctl))
            times.append((time.perf_counter() - t0) * 1000)
            ctl = ControlState(eff.route_weights, eff.draining, eff.admit, ctl.version + 1)
        times.sort()
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
        print(f"| {n} | {statistics.median(times):.2f} | {p99:.2f} | {times[-1]:.2f} |")


if __name__ == "__main__":
    main()
