"""One replay run and the rate sweep, shared by the CLI and the benchmarks.

``run_once`` = scale the trace, drive one policy, summarise. ``sweep_rate``
finds, per policy, the highest rate scale at which at least ``target`` of all
requests meet their SLA (DistServe's goodput; rejected requests are misses):
grow or shrink geometrically until the target is bracketed, then bisect to a
relative precision. Attainment is not strictly monotone in load (bursts land
differently), so the answer is the highest *tested* passing scale below the
first failing one found by bisection, and every tested point is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.replay.accounting import RunSummary, summarise
from controlplane.replay.capacity import Capacity
from controlplane.replay.driver import ControlHook, ReplayConfig, ReplayDriver, RunResult
from controlplane.replay.tenants import TenantMix
from controlplane.replay.traces import Trace, scale_rate
from controlplane.schemas import TenantSLA

ControlFactory = Callable[[ReplayConfig, Mapping[str, TenantSLA]], ControlHook]
Progress = Callable[[int], None]
DriverFactory = Callable[
    [ReplayConfig, Trace, Sequence[str], Mapping[str, TenantSLA], ControlHook | None,
     Progress | None],
    ReplayDriver,
]  # fmt: skip
"""Builds the driver of one run (a subclass that records more, in benchmarks)."""


@dataclass(frozen=True, slots=True)
class Experiment:
    """Everything fixed across the runs of one report: trace, tenants, cluster."""

    trace: Trace
    mix: TenantMix
    tenants: Sequence[str]
    base: ReplayConfig
    capacity: Capacity | None = None
    control: ControlFactory | None = None


def run_once(
    exp: Experiment,
    policy: str,
    rate_scale: float,
    progress: Progress | None = None,
    driver: DriverFactory = ReplayDriver,
) -> tuple[RunSummary, RunResult]:
    cfg = replace(exp.base, policy=policy)
    trace = scale_rate(exp.trace, rate_scale)
    control = exp.control(cfg, exp.mix.slas) if exp.control is not None else None
    res = driver(cfg, trace, exp.tenants, exp.mix.slas, control, progress).run()
    cap = exp.capacity
    summary = summarise(
        policy,
        rate_scale,
        res.outcomes,
        exp.mix.slas,
        gpu_seconds=res.gpu_seconds,
        sim_end_s=res.sim_end_s,
        capacity_rps=cap.capacity_rps if cap else None,
        feasible_ratio=cap.feasible_ratio if cap else 1.0,
        wall_s=res.wall_s,
        planner={"ticks": res.control_ticks, "scale_events": len(res.scale_events)}
        if control is not None
        else None,
    )
    return summary, res


@dataclass(slots=True)
class SweepResult:
    policy: str
    target: float
    max_rate_scale: float
    """Highest passing scale (0 when even the smallest tried fails)."""
    goodput_rps: float
    attainment: float
    bound_scale: float | None
    points: list[tuple[float, float, float]] = field(default_factory=list)
    """(rate scale, attainment, goodput rps) of every run, in scale order."""

    @property
    def of_bound(self) -> float | None:
        if not self.bound_scale:
            return None
        return self.max_rate_scale / self.bound_scale

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "max_rate_scale": self.max_rate_scale,
            "goodput_rps": self.goodput_rps,
            "attainment": self.attainment,
            "bound_rate_scale": self.bound_scale,
            "of_bound": self.of_bound,
            "points": [
                {"rate_scale": s, "attainment": a, "goodput_rps": g} for s, a, g in self.points
            ],
        }


def sweep_rate(
    exp: Experiment,
    policy: str,
    *,
    target: float = 0.9,
    start: float = 1.0,
    precision: float = 0.03,
    max_runs: int = 14,
    max_scale: float = 256.0,
    on_run: Callable[[RunSummary], None] | None = None,
) -> SweepResult:
    """Bisection on the rate scale for ``attainment ≥ target``."""
    tried: dict[float, RunSummary] = {}

    def ok(scale: float) -> bool:
        if scale not in tried:
            s, _ = run_once(exp, policy, scale)
            tried[scale] = s
            if on_run is not None:
                on_run(s)
        return tried[scale].attainment >= target

    lo, hi = 0.0, float("inf")
    s = start
    while len(tried) < max_runs:
        if ok(s):
            lo = s
            if s >= max_scale:
                break
            s = min(max_scale, s * 2.0)
        else:
            hi = s
            if s <= start / 64:
                break
            if lo > 0:
                break
            s = s / 2.0
        if lo > 0 and hi < float("inf"):
            break
    while lo > 0 and hi < float("inf") and (hi - lo) / lo > precision and len(tried) < max_runs:
        mid = (lo + hi) / 2.0
        if ok(mid):
            lo = mid
        else:
            hi = mid
    base_rps = exp.trace.mean_rate_rps
    bound = exp.capacity.sweep_bound_scale(base_rps, target) if exp.capacity else None
    best = tried.get(lo)
    return SweepResult(
        policy=policy,
        target=target,
        max_rate_scale=lo,
        goodput_rps=best.goodput_rps if best else 0.0,
        attainment=best.attainment if best else 0.0,
        bound_scale=bound,
        points=sorted((k, v.attainment, v.goodput_rps) for k, v in tried.items()),
    )
