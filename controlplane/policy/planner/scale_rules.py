"""Per-role scaling rules: the knobs, the state one role carries between ticks, and one
step of the up/down decision with hysteresis and cooldowns (see ``scaler.py``).

Up: to what the forecast needs at ``max_utilization``, at once (after
``up_cooldown_s``). Down: by one, only when the load would fit at
``max_utilization x down_utilization_ratio`` for ``down_stable_s``, nothing changed for
``down_cooldown_s`` and the role's breach risk is under ``risk_block_down``. Breach
risk over ``risk_scale_up`` adds one replica beyond the model once the last target is
reached (the profile may be wrong). A drain in progress is cancelled when the load
comes back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.policy.planner.load_predictors import LoadPredictorParams
from controlplane.policy.planner.scale import RoleNeed
from controlplane.policy.planner.types import Decision
from controlplane.schemas import WorkerSnapshot


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    interval_s: float = Field(default=10.0, gt=0)
    load_predictor: str = "constant"
    predictor_params: LoadPredictorParams = LoadPredictorParams()
    roles: tuple[str, ...] = ("prefill", "decode")
    """Roles planned when no worker is seen yet (``("both",)`` for unified serving)."""
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=8, ge=1)
    gpus_per_replica: dict[str, int] = Field(default_factory=dict)
    gpu_budget: int | None = Field(default=None, ge=0)
    max_utilization: float = Field(default=0.85, gt=0, le=1)
    down_utilization_ratio: float = Field(default=0.75, gt=0, le=1)
    itl_headroom: float = Field(default=0.9, gt=0, le=1)
    tail_factor: float = Field(default=3.0, gt=0)
    up_cooldown_s: float = Field(default=10.0, ge=0)
    down_cooldown_s: float = Field(default=120.0, ge=0)
    down_stable_s: float = Field(default=60.0, ge=0)
    risk_scale_up: float = Field(default=0.8, gt=0, le=1)
    risk_block_down: float = Field(default=0.3, ge=0, le=1)
    """No scale-down while the role's breach risk is at or above this."""
    queue_demand: bool = True
    """Count the growth of the workers' queues as arrivals (False: finished/rejected
    records only, which under overload shows capacity, not demand)."""
    backlog_drain_s: float | None = Field(default=30.0, gt=0)
    """Prompt tokens queued on prefill workers are planned to drain within this long,
    on top of the forecast arrivals (None: plan for arrivals only)."""
    drain_timeout_s: float = Field(default=120.0, gt=0)
    resync_after_s: float = Field(default=180.0, gt=0)
    rebalance_cooldown_s: float = Field(default=120.0, ge=0)
    """With the GPU budget bound, moving GPUs from one role to another (same total)
    happens at most this often. Each role's target is raised on its own and the budget
    then clips the other one, so when both are short the split flipped every tick
    (3P+1D, 2P+2D, 3P+1D, ... on Mooncake 500/25): every flip starts a worker that is
    not ready for the model-load time and drains one that was serving."""

    @model_validator(mode="after")
    def _ordered(self) -> ScaleParams:
        errors = [
            msg
            for bad, msg in (
                (self.min_replicas > self.max_replicas, "min_replicas > max_replicas"),
                (self.risk_block_down > self.risk_scale_up, "risk_block_down > risk_scale_up"),
            )
            if bad
        ]
        if errors:
            raise ValueError("; ".join(errors))
        return self


@dataclass
class RoleState:
    target: int
    last_up_s: float = -math.inf
    last_change_s: float = -math.inf
    below_since_s: float | None = None
    drains: dict[str, float] = field(default_factory=dict)  # worker → drain start


def pick_drain(workers: Mapping[str, WorkerSnapshot], ids: list[str]) -> str:
    """Least loaded first; ties go to the highest id (what a StatefulSet removes)."""
    return min(sorted(ids, reverse=True), key=lambda w: workers[w].running + workers[w].waiting)


def role_step(
    p: ScaleParams,
    st: RoleState,
    role: str,
    now_s: float,
    need: RoleNeed,
    risk: float,
    observed: int,
) -> tuple[int | None, list[Decision]]:
    """Move ``st.target`` for one role; returns a new down-step target to drain towards."""
    lo, hi = p.min_replicas, p.max_replicas
    up = min(hi, max(lo, math.ceil(need.replicas - 1e-6)))
    down = min(hi, max(lo, math.ceil(need.replicas / p.down_utilization_ratio - 1e-6)))
    ins = {
        "need": round(need.replicas, 3),
        "per_replica_rps": round(need.per_replica_rps, 3),
        "risk": round(risk, 3),
        "observed": observed,
        "detail": need.detail,
    }
    out: list[Decision] = []
    reason = "forecast"
    if risk >= p.risk_scale_up and up <= st.target <= observed and not st.drains:
        up, reason = min(hi, st.target + 1), "breach_risk"
    if observed != st.target and not st.drains and now_s - st.last_change_s >= p.resync_after_s:
        out.append(Decision("resync", role, observed, "target_not_reached", {"target": st.target}))
        st.target, st.last_change_s = observed, now_s
    if st.drains and (up > st.target or down >= st.target):  # the load came back
        out.append(Decision("drain", role, sorted(st.drains), "drain_cancelled", ins))
        st.drains.clear()
    if up > st.target:
        st.below_since_s = None
        if now_s - st.last_up_s >= p.up_cooldown_s:
            out.append(Decision("scale", role, up, reason, {**ins, "before": st.target}))
            st.target, st.last_up_s, st.last_change_s = up, now_s, now_s
        return None, out
    if down < st.target and not st.drains and risk < p.risk_block_down:
        if st.below_since_s is None:
            st.below_since_s = now_s
        stable = now_s - st.below_since_s >= p.down_stable_s
        if stable and now_s - st.last_change_s >= p.down_cooldown_s:
            return st.target - 1, out
        return None, out
    if down >= st.target:
        st.below_since_s = None
    return None, out
