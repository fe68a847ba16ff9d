"""Predictive early rejection: say no now rather than serve late.

Reject when the best route's predicted TTFT exceeds the request's target by more
than ``slack_ratio`` AND either

- some request of strictly higher priority is waiting for its first token
  (shedding this one helps someone who matters more: ``predicted_sla_miss``), or
- the request is below premium, ``shed_hopeless`` is on and work is queued ahead of
  it on its worker (``hopeless``): served late it meets nothing and only delays the
  requests behind it, which then miss too (a burst turns into a cascade). Goodput
  counts a late answer and a 429 alike; the 429 lets the client go elsewhere or come
  back, and the capacity goes to requests that can still make it, as an optimal
  schedule would (``replay/capacity.py`` drops the jobs that cannot finish in time).

Premium is never shed here, nor a request late with nothing queued ahead (too long
for its target even on an idle worker: refusing it would refuse its every retry).
Retry-After = predicted time for the chosen worker's queue to drain, clamped.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.types import ADMIT, RouteRequest, Verdict
from controlplane.schemas import Priority


class PredictiveParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    slack_ratio: float = Field(default=1.0, gt=0)
    """Reject only when predicted TTFT > target x slack_ratio."""
    shed_hopeless: bool = True
    """Also reject a below-premium request predicted to miss behind a queue when nobody
    more important waits (``hopeless``); off = such requests are served late."""
    min_retry_after_s: float = Field(default=1.0, ge=0)
    max_retry_after_s: float = Field(default=60.0, gt=0)


class EarlyRejecter:
    type_name = "predictive-rejecter"

    def __init__(self, name: str = "predictive", params: PredictiveParams | None = None) -> None:
        self.name = name
        self.params = params or PredictiveParams()

    def decide(
        self,
        req: RouteRequest,
        predicted_ttft_ms: float | None,
        drain_s: float,
        waiting_by_rank: Mapping[int, int],
    ) -> Verdict:
        p = self.params
        if not p.enabled or predicted_ttft_ms is None:
            return ADMIT
        limit_ms = req.ttft_target_ms * p.slack_ratio
        if predicted_ttft_ms <= limit_ms:
            return ADMIT
        rank = req.priority.rank
        above = sum(n for r, n in waiting_by_rank.items() if r > rank)
        inputs = {
            "predicted_ttft_ms": round(predicted_ttft_ms, 3),
            "target_ms": req.ttft_target_ms,
            "higher_priority_waiting": above,
            "drain_s": round(drain_s, 3),
        }
        retry = min(p.max_retry_after_s, max(p.min_retry_after_s, drain_s))
        if above > 0:
            return Verdict(False, "predicted_sla_miss", retry_after_s=retry, inputs=inputs)
        if not p.shed_hopeless or rank >= Priority.PREMIUM.rank:
            return Verdict(True, "late_but_top_priority", inputs=inputs)
        if drain_s <= 0.0:
            # late with nothing queued ahead: too long for its target even on an idle
            # worker; refusing it now would refuse its every retry
            return Verdict(True, "late_infeasible", inputs=inputs)
        return Verdict(False, "hopeless", retry_after_s=retry, inputs=inputs)
