"""Replay speed: wall time of ``slaplane replay`` runs (one policy, one core).

The budget (issue 6): a 1-hour trace on 8 workers in < 60 s. Runs the Azure code
trace (57 min, 8,819 requests) on 4P+4D and 8 mixed workers, and the Mooncake
trace (17 min, 3,993 long-prompt requests), per policy, and prints wall time,
simulated seconds per wall second and engine steps.

    .venv/bin/python benchmarks/bench_replay.py [--policies round_robin,sla]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from controlplane.replay.experiment import Options, build_experiment
from controlplane.replay.runner import run_once

ROOT = Path(__file__).resolve().parents[1]
AZURE, MOONCAKE = "AzureLLMInferenceTrace_code.csv", "synthetic_trace.jsonl"
# (trace, prefill, decode, mixed workers, rate scale)
CASES = (
    (AZURE, 4, 4, 0, 1.0),
    (AZURE, 0, 0, 8, 1.0),
    (AZURE, 4, 4, 0, 4.0),
    (MOONCAKE, 4, 4, 0, 1.0),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--policies", default="round_robin,least_loaded,kv_aware,sla")
    ap.add_argument("--profile", default="h100-llama3.1-8b")
    a = ap.parse_args()
    cols = "trace | cluster | scale | policy | requests | simulated s | wall s | sim/wall | steps"
    print(f"| {cols} |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for trace, p, d, k, scale in CASES:
        path = ROOT / "data/traces" / trace
        exp = build_experiment(Options(path, prefill=p, decode=d, workers=k, profile=a.profile))
        for pol in a.policies.split(","):
            s, r = run_once(exp, pol, scale)
            print(
                f"| {trace} | {exp.base.shape.label()} | {scale:g} | {pol} | {s.offered} | "
                f"{r.sim_end_s:,.0f} | {r.wall_s:.2f} | {r.sim_end_s / r.wall_s:,.0f} | "
                f"{r.engine_steps:,} |",
                flush=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
