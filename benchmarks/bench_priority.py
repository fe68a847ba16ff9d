"""Premium protection vs rate, before/after side by side in one run (issue 6 goal).

Replays a trace with a three-tier tenant mix through each routing policy with
priority protection off ("off", before: admission as it was, each request judged
against its own target only), rejecting stopped requests ("reject": headroom 0.6,
no holding, the first version) and with the defaults ("hold": headroom 0.2, stopped
requests held in the admission queue), at several rate scales. Also finds the
rate scale where round_robin (protection off) falls below 90 % of all requests
meeting their SLA, and runs every policy at twice that scale: the issue's goal is
premium attainment >= 99 % there.

    .venv/bin/python benchmarks/bench_priority.py
    .venv/bin/python benchmarks/bench_priority.py --trace data/traces/synthetic_trace.jsonl
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from controlplane.replay.experiment import Options, build_experiment
from controlplane.replay.runner import Experiment, RunSummary, run_once, sweep_rate

MODES: dict[str, dict[str, Any]] = {
    "off": {"protect": {"enabled": False}},
    "reject": {"protect": {"hold": False, "headroom_ratio": 0.6}},
    "hold": {},
}


def with_admission(exp: Experiment, params: dict[str, Any]) -> Experiment:
    return replace(exp, base=replace(exp.base, admission_params=params))


def row(mode: str, s: RunSummary) -> dict[str, Any]:
    return {
        "policy": s.policy,
        "protect": mode,
        "rate_scale": round(s.rate_scale, 3),
        "attainment": s.attainment,
        "goodput_rps": s.goodput_rps,
        "tenants": {t.tenant: t.attainment for t in s.tenants},
        "tenant_goodput_rps": {t.tenant: t.goodput_rps for t in s.tenants},
        "rejected": s.rejected,
        "reject_reasons": dict(s.reject_reasons),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--trace", type=Path, default=Path("data/traces/AzureLLMInferenceTrace_code.csv")
    )
    ap.add_argument("--tenants", type=Path, default=Path("data/tenants/three-tier.yaml"))
    ap.add_argument("--prefill", type=int, default=2)
    ap.add_argument("--decode", type=int, default=2)
    ap.add_argument("--profile", default="h100-llama3.1-8b")
    ap.add_argument("--policies", default="round_robin,least_loaded,kv_aware,sla")
    ap.add_argument("--scales", default="1,2,3,4")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    opts = Options(
        trace=args.trace,
        tenants=args.tenants,
        prefill=args.prefill,
        decode=args.decode,
        profile=args.profile,
    )
    exp = build_experiment(opts)
    policies = [p for p in args.policies.split(",") if p]
    ref = sweep_rate(with_admission(exp, MODES["off"]), "round_robin", target=0.9)
    goal_scale = 2.0 * ref.max_rate_scale
    scales = sorted({float(x) for x in args.scales.split(",")} | {round(goal_scale, 3)})
    print(f"{exp.trace.name}, {args.tenants.name}, {args.prefill}P+{args.decode}D {args.profile}")
    print(
        f"round_robin (protection off) >= 90 % up to x{ref.max_rate_scale:.2f}; "
        f"goal scale (2x that) = x{goal_scale:.2f}\n"
    )
    tenants = [t.sla.tenant for t in exp.mix.tenants]
    head = ["scale", "policy", "protect", "all %", "goodput rps", *[f"{t} %" for t in tenants]]
    print("| " + " | ".join(head) + " | rejected (reasons) |")
    print("|" + "---|" * (len(head) + 1))
    rows: list[dict[str, Any]] = []
    for scale in scales:
        for policy in policies:
            for mode, params in MODES.items():
                s, _ = run_once(with_admission(exp, params), policy, scale)
                r = row(mode, s)
                rows.append(r)
                cells = [
                    f"x{scale:.2f}" + (" (goal)" if scale == round(goal_scale, 3) else ""),
                    policy,
                    mode,
                    f"{100 * s.attainment:.1f}",
                    f"{s.goodput_rps:.2f}",
                    *[f"{100 * r['tenants'][t]:.1f}" for t in tenants],
                ]
                reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.reject_reasons.items()))
                print("| " + " | ".join(cells) + f" | {s.rejected} ({reasons}) |", flush=True)
    if args.json is not None:
        doc = {
            "trace": str(args.trace),
            "tenants": str(args.tenants),
            "round_robin_90_scale": ref.max_rate_scale,
            "goal_scale": goal_scale,
            "rows": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
