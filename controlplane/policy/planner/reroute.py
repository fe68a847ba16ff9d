"""Route weights per worker, with hysteresis, for the gateways to follow.

A worker gets weight 0 (no new requests) when it is down, its telemetry is stale
(stale counts as saturated), it is draining, its KV cache is nearly full, or its
predicted latency would breach the tightest active target. KV and latency
exclusions have hysteresis: a worker excluded above ``kv_exclude_above`` comes back
only under ``kv_include_below`` (same for latency ratios), so a worker near the
line does not flap. Between the two lines the weight falls linearly to
``soft_floor``. If a pool (model, role) would lose every worker that is up and not
draining, they all stay in and the fallback is recorded (house rule 7). Weights
move in ``quantum`` steps and changes under ``deadband`` are not written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.policy.planner.outlook import is_stale, serves_decode, serves_prefill
from controlplane.policy.planner.types import Decision
from controlplane.schemas import WorkerSnapshot


class RerouteParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    stale_after_s: float = Field(default=3.0, gt=0)
    kv_exclude_above: float = Field(default=0.95, gt=0, le=1)
    kv_include_below: float = Field(default=0.85, ge=0, le=1)
    latency_exclude_ratio: float = Field(default=1.0, gt=0, description="predicted/target")
    latency_include_ratio: float = Field(default=0.7, gt=0)
    soft_floor: float = Field(default=0.25, gt=0, le=1)
    quantum: float = Field(default=0.05, gt=0, le=1)
    deadband: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> RerouteParams:
        errors = [
            msg
            for bad, msg in (
                (
                    self.kv_include_below >= self.kv_exclude_above,
                    "kv_include_below >= kv_exclude_above",
                ),
                (
                    self.latency_include_ratio >= self.latency_exclude_ratio,
                    "latency_include_ratio >= latency_exclude_ratio",
                ),
            )
            if bad
        ]
        if errors:
            raise ValueError("; ".join(errors))
        return self


@dataclass(frozen=True, slots=True)
class WorkerSignal:
    """Predicted latency of one worker relative to the tightest active targets."""

    ttft_ratio: float = 0.0
    itl_ratio: float = 0.0


def _band(x: float, lo: float, hi: float) -> float:
    return 0.0 if hi <= lo else min(1.0, max(0.0, (x - lo) / (hi - lo)))


def _quantize(w: float, q: float) -> float:
    return round(round(w / q) * q, 3)


def route_weights(
    now_s: float,
    workers: Mapping[str, WorkerSnapshot],
    signals: Mapping[str, WorkerSignal],
    draining: frozenset[str],
    previous: Mapping[str, float],
    params: RerouteParams | None = None,
) -> tuple[dict[str, float], list[Decision]]:
    p = params or RerouteParams()
    soft: dict[str, float] = {}  # weight ignoring hysteresis exclusions
    why: dict[str, str] = {}
    hard: set[str] = set()
    for w, s in workers.items():
        sig = signals.get(w, WorkerSignal())
        ratio = max(
            sig.ttft_ratio if serves_prefill(s.role) else 0.0,
            sig.itl_ratio if serves_decode(s.role) else 0.0,
        )
        was_out = previous.get(w, 1.0) <= 0.0
        kv_line = p.kv_include_below if was_out else p.kv_exclude_above
        lat_line = p.latency_include_ratio if was_out else p.latency_exclude_ratio
        pressure = max(
            _band(s.kv_usage, p.kv_include_below, p.kv_exclude_above),
            _band(ratio, p.latency_include_ratio, p.latency_exclude_ratio),
        )
        soft[w] = max(p.soft_floor, _quantize(1.0 - (1.0 - p.soft_floor) * pressure, p.quantum))
        if not s.up or w in draining:
            why[w] = "down" if not s.up else "draining"
            hard.add(w)
        elif is_stale(s, now_s, p.stale_after_s):
            why[w] = "stale"
        elif s.kv_usage >= kv_line if was_out else s.kv_usage > kv_line:
            why[w] = "kv_full"
        elif ratio >= lat_line if was_out else ratio > lat_line:
            why[w] = "predicted_breach"
    weights = {w: (0.0 if w in why else soft[w]) for w in workers}
    fallback: set[str] = set()
    pools: dict[tuple[str, str], list[str]] = {}
    for w, s in workers.items():
        pools.setdefault((s.model, s.role), []).append(w)
    for ids in pools.values():
        usable = [w for w in ids if w not in hard]
        if usable and all(weights[w] <= 0.0 for w in usable):
            for w in usable:
                weights[w] = soft[w]
                fallback.add(w)
    decisions: list[Decision] = []
    for w in sorted(workers):
        prev, new = previous.get(w, 1.0), weights[w]
        if prev > 0 and new > 0 and abs(new - prev) < p.deadband and new < 1.0:
            weights[w] = new = prev
        if new == prev:
            continue
        s, sig = workers[w], signals.get(w, WorkerSignal())
        reason = "fallback_all_excluded" if w in fallback else why.get(w, "")
        reason = reason or ("pressure" if new < 1.0 else "healthy")
        ins = {
            "kv_usage": round(s.kv_usage, 4),
            "ttft_ratio": round(sig.ttft_ratio, 3),
            "itl_ratio": round(sig.itl_ratio, 3),
            "age_s": round(s.age_s(now_s), 2),
            "up": s.up,
            "before": prev,
        }
        decisions.append(Decision("route", w, new, reason, ins))
    return weights, decisions
