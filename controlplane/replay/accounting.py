"""Per-request outcomes and the SLA/goodput arithmetic of DESIGN.md.

Whether a request met its SLA is ``TenantSLA.judge`` (the driver sets
``Outcome.met`` from it), ``vllm bench serve --goodput``'s definition, with TPOT the
mean inter-token time after the first token. Rejected and failed requests are
misses. Goodput = met requests / offered span (first to
last arrival), so it is at most the offered rate and equals attainment x offered
rate; dropping a request can never raise it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controlplane.schemas import TenantSLA

OK = "ok"
REJECTED = "rejected"
FAILED = "failed"


@dataclass(slots=True)
class Outcome:
    """What happened to one trace request in one replay run."""

    index: int
    tenant: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    status: str = FAILED
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    met: bool = False
    reason: str = ""
    cached_tokens: int = 0
    preemptions: int = 0


def _pct(values: Sequence[float], qs: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {f"p{int(q)}": None for q in qs}
    arr = np.asarray(values, dtype=float)
    got = np.percentile(arr, list(qs))
    return {f"p{int(q)}": float(v) for q, v in zip(qs, got, strict=True)}


@dataclass(slots=True)
class TenantSummary:
    tenant: str
    priority: str
    offered: int
    met: int
    rejected: int
    attainment: float
    goodput_rps: float
    objective: float

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "priority": self.priority,
            "offered": self.offered,
            "met": self.met,
            "rejected": self.rejected,
            "attainment": self.attainment,
            "goodput_rps": self.goodput_rps,
            "objective": self.objective,
            "objective_met": self.attainment >= self.objective,
        }


@dataclass(slots=True)
class RunSummary:
    """One policy on one trace at one rate scale: the numbers the report shows."""

    policy: str
    rate_scale: float
    offered: int
    span_s: float
    offered_rps: float
    met: int
    attainment: float
    goodput_rps: float
    completed: int
    rejected: int
    failed: int
    ttft_ms: dict[str, float | None]
    tpot_ms: dict[str, float | None]
    tenants: list[TenantSummary]
    gpu_seconds: float
    mean_gpus: float
    goodput_per_gpu: float
    capacity_rps: float | None = None
    bound_rps: float | None = None
    """min(offered feasible rate, capacity): the goodput a perfect scheduler would get."""
    of_bound: float | None = None
    reject_reasons: dict[str, int] = field(default_factory=dict)
    preemptions: int = 0
    cached_token_ratio: float = 0.0
    wall_s: float = 0.0
    sim_end_s: float = 0.0
    planner: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "rate_scale": self.rate_scale,
            "offered": self.offered,
            "span_s": self.span_s,
            "offered_rps": self.offered_rps,
            "met": self.met,
            "attainment": self.attainment,
            "goodput_rps": self.goodput_rps,
            "completed": self.completed,
            "rejected": self.rejected,
            "failed": self.failed,
            "ttft_ms": self.ttft_ms,
            "tpot_ms": self.tpot_ms,
            "tenants": [t.to_json() for t in self.tenants],
            "gpu_seconds": self.gpu_seconds,
            "mean_gpus": self.mean_gpus,
            "goodput_per_gpu": self.goodput_per_gpu,
            "capacity_rps": self.capacity_rps,
            "bound_rps": self.bound_rps,
            "of_bound": self.of_bound,
            "reject_reasons": self.reject_reasons,
            "preemptions": self.preemptions,
            "cached_token_ratio": self.cached_token_ratio,
            "wall_s": self.wall_s,
            "sim_end_s": self.sim_end_s,
            "planner": self.planner,
        }


def summarise(
    policy: str,
    rate_scale: float,
    outcomes: Sequence[Outcome],
    slas: Mapping[str, TenantSLA],
    *,
    gpu_seconds: float,
    sim_end_s: float,
    capacity_rps: float | None = None,
    feasible_ratio: float = 1.0,
    wall_s: float = 0.0,
    planner: Mapping[str, Any] | None = None,
) -> RunSummary:
    """Aggregate outcomes. ``feasible_ratio`` is the share of requests a perfect
    scheduler could serve in SLA on an idle cluster (from ``capacity``)."""
    n = len(outcomes)
    if n == 0:
        raise ValueError("no outcomes to summarise")
    arrivals = [o.arrival_s for o in outcomes]
    span = max(arrivals) - min(arrivals)
    span = span if span > 0 else 1.0
    met = sum(1 for o in outcomes if o.met)
    done = [o for o in outcomes if o.status == OK]
    rejected = [o for o in outcomes if o.status == REJECTED]
    reasons: dict[str, int] = {}
    for o in outcomes:
        if o.status != OK:
            reasons[o.reason or o.status] = reasons.get(o.reason or o.status, 0) + 1
    tenants: list[TenantSummary] = []
    for name, sla in slas.items():
        mine = [o for o in outcomes if o.tenant == name]
        if not mine:
            continue
        m = sum(1 for o in mine if o.met)
        tenants.append(
            TenantSummary(
                tenant=name,
                priority=sla.priority.value,
                offered=len(mine),
                met=m,
                rejected=sum(1 for o in mine if o.status == REJECTED),
                attainment=m / len(mine),
                goodput_rps=m / span,
                objective=sla.objective,
            )
        )
    sim_s = max(sim_end_s, span)
    mean_gpus = gpu_seconds / sim_s if sim_s > 0 else 0.0
    goodput = met / span
    offered_rps = n / span
    bound = None if capacity_rps is None else min(offered_rps * feasible_ratio, capacity_rps)
    prompt = sum(o.prompt_tokens for o in done)
    cached = sum(o.cached_tokens for o in done)
    return RunSummary(
        policy=policy,
        rate_scale=rate_scale,
        offered=n,
        span_s=span,
        offered_rps=offered_rps,
        met=met,
        attainment=met / n,
        goodput_rps=goodput,
        completed=len(done),
        rejected=len(rejected),
        failed=n - len(done) - len(rejected),
        ttft_ms=_pct([o.ttft_s * 1000.0 for o in done if o.ttft_s is not None], (50, 90, 99)),
        tpot_ms=_pct([o.tpot_s * 1000.0 for o in done if o.tpot_s is not None], (50, 90, 99)),
        tenants=tenants,
        gpu_seconds=gpu_seconds,
        mean_gpus=mean_gpus,
        goodput_per_gpu=goodput / mean_gpus if mean_gpus > 0 else 0.0,
        capacity_rps=capacity_rps,
        bound_rps=bound,
        of_bound=(goodput / bound) if bound else None,
        reject_reasons=dict(sorted(reasons.items())),
        preemptions=sum(o.preemptions for o in outcomes),
        cached_token_ratio=cached / prompt if prompt else 0.0,
        wall_s=wall_s,
        sim_end_s=sim_end_s,
        planner=dict(planner or {}),
    )
