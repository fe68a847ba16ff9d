"""Per-tenant admit fractions: shed the lowest priority first, recover top-down (AIMD).

When a tenant is predicted to breach (breach probability ≥ ``shed_above``), the
lowest priority class below it that still gets traffic is cut multiplicatively
(x ``decrease_factor`` every ``decrease_interval_s``, snapped to 0 under
``zero_below``); only when that class is at 0 does the next class up start to be
shed, and never the at-risk class itself or anything above it. When every tenant
above a shed class is back under ``recover_below`` (hysteresis), the highest shed
class regains ``increase_step`` per ``increase_interval_s`` until it is at 1, then
the next lower one does. So premium is never shed while a lower class is admitted.
Time-based steps make the behaviour independent of the tick rate.

``slo`` picks the breach that sheds: ``all`` (default) or, when the gateways hold
lower classes behind higher ones' TTFT targets (``admission.protect``; the planner's
``priority_queueing``), ``itl`` only: a lower class then adds nothing to a higher
one's TTFT, so shedding it for a TTFT risk drops requests that would have been
served in time and helps nobody (more prefill replicas do); decode batches are
still shared, so ITL risk still sheds.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.policy.planner.types import Decision, TenantRisk
from controlplane.schemas import TenantSLA


class ThrottleParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    shed_above: float = Field(default=0.5, gt=0, le=1)
    recover_below: float = Field(default=0.2, ge=0, le=1)
    decrease_factor: float = Field(default=0.5, gt=0, lt=1)
    increase_step: float = Field(default=0.1, gt=0, le=1)
    decrease_interval_s: float = Field(default=5.0, ge=0)
    increase_interval_s: float = Field(default=5.0, ge=0)
    zero_below: float = Field(default=0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> ThrottleParams:
        errors = [
            msg
            for bad, msg in (
                (self.recover_below >= self.shed_above, "recover_below >= shed_above"),
            )
            if bad
        ]
        if errors:
            raise ValueError("; ".join(errors))
        return self


class Throttle:
    """Stateful only in when it last stepped; fractions come in from the control hash."""

    def __init__(self, params: ThrottleParams | None = None) -> None:
        self.p = params or ThrottleParams()
        self._last_step_s = float("-inf")

    def decide(
        self,
        now_s: float,
        tenants: Mapping[str, TenantSLA],
        risks: Mapping[str, TenantRisk],
        current: Mapping[str, float],
        slo: str = "all",
    ) -> tuple[dict[str, float], list[Decision]]:
        frac = {t: min(1.0, max(0.0, current.get(t, 1.0))) for t in tenants}
        rank = {t: s.priority.rank for t, s in tenants.items()}
        breach = {
            t: risks[t].breach_probability.get(slo, 0.0) if t in risks else 0.0 for t in tenants
        }
        classes = sorted(set(rank.values()))
        decisions: list[Decision] = []

        def members(r: int) -> list[str]:
            return sorted(t for t in tenants if rank[t] == r)

        def inputs(r: int) -> dict[str, object]:
            above = {t: round(breach[t], 4) for t in tenants if rank[t] > r}
            return {"breach_above": above, "before": {t: frac[t] for t in members(r)}}

        at_risk = [rank[t] for t in tenants if breach[t] >= self.p.shed_above]
        top_risk = max(at_risk, default=None)
        elapsed = now_s - self._last_step_s
        if top_risk is not None:
            shed = [r for r in classes if r < top_risk and any(frac[t] > 0 for t in members(r))]
            if shed and elapsed >= self.p.decrease_interval_s:
                r = shed[0]
                ins = inputs(r)
                for t in members(r):
                    f = frac[t] * self.p.decrease_factor
                    frac[t] = 0.0 if f < self.p.zero_below else round(f, 3)
                self._last_step_s = now_s
                for t in members(r):
                    decisions.append(Decision("admit", t, frac[t], "shed_for_higher_priority", ins))
        else:
            shed = [r for r in classes if any(frac[t] < 1.0 for t in members(r))]
            if shed and elapsed >= self.p.increase_interval_s:
                r = shed[-1]
                calm = all(breach[t] < self.p.recover_below for t in tenants if rank[t] > r)
                if calm:
                    ins = inputs(r)
                    for t in members(r):
                        frac[t] = round(min(1.0, frac[t] + self.p.increase_step), 3)
                    self._last_step_s = now_s
                    for t in members(r):
                        decisions.append(Decision("admit", t, frac[t], "recover", ins))
        # repair: a class above an admitted class must be fully admitted
        for r in classes:
            lower_admitted = any(frac[t] > 0 for t in tenants if rank[t] < r)
            for t in members(r):
                if lower_admitted and frac[t] < 1.0:
                    decisions.append(
                        Decision("admit", t, 1.0, "priority_order_repair", {"was": frac[t]})
                    )
                    frac[t] = 1.0
        return frac, decisions
