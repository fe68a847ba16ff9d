"""Tenant-level breach prediction: is ``slaplane_predicted_sla_breach_probability`` right?

``bench_predictor_accuracy.py`` scores the per-request TTFT prediction. This scores
what the controller exports and acts on: at every control tick, per tenant, the
probability that the tenant's objective (e.g. 99 % of requests meet the SLA) is
broken over the next horizon (``BreachParams.horizon_s``, 30 s). The label is what
then happened: among the tenant's requests that *arrived* in (tick, tick + horizon],
the met fraction fell below the objective. A tick where the tenant sent nothing in
the horizon is left out (nothing to breach, nothing to predict).

The replay runs the real controller core (``ControlPlanner`` through the replay's
``PlannerHook``) on the trace at several rate scales, so calm and overloaded periods
are both in the sample. ``--mode advisory`` (default) computes the predictions but
applies none of the controller's actions: a throttle that works would prevent the
breach it predicted and make a right prediction look wrong. ``--mode closed`` lets
it act, to show how the numbers read on a controlled cluster. Ticks in the first
``--warmup-s`` of each run are left out (the calibrator and traffic window are
empty); the rest is scored per tenant and pooled, with scikit-learn's
``roc_auc_score`` and the Brier score (a probability, not only a ranking). The exported
probability is calibrated online once enough windows are labelled
(``policy/planner/breach_calibration.py``); "AUC raw"/"Brier raw" score the model's value before
that (what the throttle and scaler act on).

    .venv/bin/python benchmarks/bench_breach_auc.py
    .venv/bin/python benchmarks/bench_breach_auc.py --trace data/traces/synthetic_trace.jsonl \
        --scales 0.25,0.5,1
"""

from __future__ import annotations

import argparse
import bisect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from controlplane.policy.control_fields import ControlState
from controlplane.policy.planner.breach import BreachParams
from controlplane.policy.planner.types import Effects
from controlplane.replay.accounting import Outcome
from controlplane.replay.control import PlannerHook
from controlplane.replay.driver import ControlOutput, ReplayConfig
from controlplane.replay.experiment import Options, build_experiment
from controlplane.replay.runner import run_once
from controlplane.schemas import RequestRecord, TenantSLA, WorkerSnapshot

ROOT = Path(__file__).resolve().parents[1]
GOAL_AUC = 0.9


@dataclass(frozen=True, slots=True)
class Point:
    scale: float
    tick_s: float
    tenant: str
    prob: float
    """Exported (calibrated once enough outcomes are labelled: ``breach_calibration``)."""
    breached: bool
    requests: int
    raw: float
    """The model's probability before calibration (what the throttle and scaler act on)."""


class Recording(PlannerHook):
    """The replay's controller hook, keeping every tick's tenant risks."""

    def __init__(self, cfg: ReplayConfig, tenants: Mapping[str, TenantSLA], advisory: bool) -> None:
        super().__init__(cfg, tenants)
        self.advisory = advisory
        self.ticks: list[Effects] = []

    def tick(
        self,
        now_s: float,
        workers: Mapping[str, WorkerSnapshot],
        records: Sequence[RequestRecord],
        replicas: Mapping[str, int],
    ) -> ControlOutput:
        out = super().tick(now_s, workers, records, replicas)
        assert self.last_effects is not None
        self.ticks.append(self.last_effects)
        if self.advisory:
            # the gateways follow none of it: the next tick must not read back drains,
            # weights or admit fractions that were never applied (it did, and priced
            # TTFT/ITL without a decode worker it had "drained" while it still served)
            self.control = ControlState(version=self.control.version)
            return ControlOutput(next_tick_s=out.next_tick_s, decisions=out.decisions)
        return out


def label_ticks(
    ticks: Sequence[Effects],
    outcomes: Sequence[Outcome],
    slas: Mapping[str, TenantSLA],
    horizon_s: float,
    warmup_s: float,
    scale: float,
) -> list[Point]:
    """One point per (tick, tenant with requests in the horizon)."""
    by_tenant: dict[str, tuple[list[float], list[bool]]] = {}
    for o in sorted(outcomes, key=lambda o: o.arrival_s):
        arr, met = by_tenant.setdefault(o.tenant, ([], []))
        arr.append(o.arrival_s)
        met.append(o.met)
    cum = {t: np.concatenate([[0], np.cumsum(m)]) for t, (_, m) in by_tenant.items()}
    points = []
    for eff in ticks:
        if eff.now_s < warmup_s:
            continue
        for tenant, risk in eff.risks.items():
            if tenant not in by_tenant or tenant not in slas:
                continue
            arr = by_tenant[tenant][0]
            lo = bisect.bisect_right(arr, eff.now_s)
            hi = bisect.bisect_right(arr, eff.now_s + horizon_s)
            n = hi - lo
            if n == 0:
                continue
            n_met = float(cum[tenant][hi] - cum[tenant][lo])
            breached = n_met / n < slas[tenant].objective
            raw = (risk.raw_breach_probability or risk.breach_probability).get("all", 0.0)
            points.append(Point(scale, eff.now_s, tenant, risk.breach, breached, n, raw))
    return points


def score(points: Sequence[Point]) -> dict[str, float | int | None]:
    y = np.array([p.breached for p in points], dtype=bool)
    s = np.array([p.prob for p in points], dtype=float)
    r = np.array([p.raw for p in points], dtype=float)
    both = 0 < y.sum() < len(y)
    return {
        "points": len(points),
        "breaches": int(y.sum()),
        "auc": float(roc_auc_score(y, s)) if both else None,
        "brier": float(brier_score_loss(y, s)) if len(y) else None,
        "auc_raw": float(roc_auc_score(y, r)) if both else None,
        "brier_raw": float(brier_score_loss(y, r)) if len(y) else None,
        "base_rate_brier": float(np.mean(y) * (1 - np.mean(y))) if len(y) else None,
        "mean_prob_when_breached": float(s[y].mean()) if y.any() else None,
        "mean_prob_when_not": float(s[~y].mean()) if (~y).any() else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--trace", type=Path, default=ROOT / "data/traces/AzureLLMInferenceTrace_code.csv"
    )
    ap.add_argument("--tenants", type=Path, default=ROOT / "data/tenants/three-tier.yaml")
    ap.add_argument("--window", default="0:1800", help="trace seconds START:END")
    ap.add_argument("--scales", default="1,3,5", help="rate scales, comma-separated")
    ap.add_argument("--prefill", type=int, default=2)
    ap.add_argument("--decode", type=int, default=2)
    ap.add_argument("--policy", default="sla")
    ap.add_argument("--mode", choices=("advisory", "closed"), default="advisory")
    ap.add_argument("--control-interval-s", type=float, default=5.0)
    ap.add_argument("--warmup-s", type=float, default=60.0)
    ap.add_argument(
        "--local-prefill",
        choices=("never", "threshold", "predictive"),
        help="the router's local prefill mode (default: the policy's own)",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    horizon = BreachParams().horizon_s
    advisory = args.mode == "advisory"
    hooks: list[Recording] = []

    def factory(cfg: ReplayConfig, tenants: Mapping[str, TenantSLA]) -> Recording:
        hooks.append(Recording(cfg, tenants, advisory))
        return hooks[-1]

    opts = Options(
        trace=args.trace, window=args.window, tenants=args.tenants, prefill=args.prefill,
        decode=args.decode, planner=True, control_interval_s=args.control_interval_s,
    )  # fmt: skip
    exp = build_experiment(opts, factory)
    if args.local_prefill:
        lp = {"local-prefill": {"mode": args.local_prefill}}
        exp = replace(exp, base=replace(exp.base, router_params=lp))
    slas = exp.mix.slas
    points: list[Point] = []
    for scale in (float(x) for x in args.scales.split(",")):
        summary, res = run_once(exp, args.policy, scale)
        pts = label_ticks(hooks[-1].ticks, res.outcomes, slas, horizon, args.warmup_s, scale)
        points += pts
        sc = score(pts)
        print(f"x{scale:g}: attainment {summary.attainment:.3f}, {sc['points']} tenant-ticks, "
              f"{sc['breaches']} breached")  # fmt: skip

    rows: dict[str, dict[str, float | int | None]] = {"all tenants": score(points)}
    for t in slas:
        rows[t] = score([p for p in points if p.tenant == t])
    print(f"\nmode={args.mode} horizon={horizon:g}s trace={args.trace.name} "
          f"window={args.window} scales={args.scales} goal AUC >= {GOAL_AUC}")  # fmt: skip
    print("| tenants | tenant-ticks | breached | AUC | Brier | Brier of base rate | "
          "mean p (breached) | mean p (not) | AUC raw | Brier raw |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def f(v: float | int | None, d: int = 3) -> str:
        return "—" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))

    for name, r in rows.items():
        print(f"| {name} | {r['points']} | {r['breaches']} | {f(r['auc'])} | {f(r['brier'])} | "
              f"{f(r['base_rate_brier'])} | {f(r['mean_prob_when_breached'])} | "
              f"{f(r['mean_prob_when_not'])} | {f(r['auc_raw'])} | "
              f"{f(r['brier_raw'])} |")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"mode": args.mode, "horizon_s": horizon, "rows": rows}))


if __name__ == "__main__":
    main()
