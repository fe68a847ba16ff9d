"""The pure part of admission, run after rate limits/concurrency and after routing.

Order: controller admit fraction (with the premium rule) → predictive early
rejection, or displacement of a larger unstarted request in its place
(``displace.py``) → priority protection (``protect.py``: a lower class may not build a
queue an active higher class would miss in; held in the driver's admission queue,
else rejected) → saturation queueing. Rate limits and concurrency are executed by the
driver (store round trip live, ``LocalBuckets`` in replay) from ``bucket_specs``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.request.admission.admit_fraction import (
    AdmitFractionGate,
    AdmitFractionParams,
    effective_fraction,
)
from controlplane.policy.request.admission.displace import (
    DisplaceParams,
    QueuedRequest,
    pick_victim,
)
from controlplane.policy.request.admission.predictive import EarlyRejecter, PredictiveParams
from controlplane.policy.request.admission.protect import (
    ActiveTargets,
    PriorityProtector,
    ProtectParams,
)
from controlplane.policy.request.admission.rate_limit import RateLimitParams
from controlplane.policy.request.admission.saturation import SaturationParams, UtilizationDetector
from controlplane.policy.types import ADMIT, RouteRequest, Verdict
from controlplane.schemas import Priority


class QueueParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_size: int = Field(default=0, ge=0)
    """Requests the gateway may hold while the pool is saturated; 0 disables queueing."""
    max_wait_s: float = Field(default=1.0, gt=0)
    """A queued request leaves with 429 after this long or its TTFT target, if sooner."""


class AdmissionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rate_limit: RateLimitParams = RateLimitParams()
    admit_fraction: AdmitFractionParams = AdmitFractionParams()
    predictive: PredictiveParams = PredictiveParams()
    displace: DisplaceParams = DisplaceParams()
    protect: ProtectParams = ProtectParams()
    saturation: SaturationParams = SaturationParams()
    queue: QueueParams = QueueParams()


@dataclass(frozen=True, slots=True)
class AdmissionContext:
    req: RouteRequest
    predicted_ttft_ms: float | None = None
    drain_s: float = 0.0
    waiting_by_rank: Mapping[int, int] = field(default_factory=dict)
    """Requests waiting for their first token, per ``Priority.rank``, excluding this one."""
    admit_fractions: Mapping[str, float] = field(default_factory=dict)
    tenant_priorities: Mapping[str, Priority] = field(default_factory=dict)
    saturation: float = 0.0
    queued: int = 0
    """Requests already held in the driver's queue."""
    active_ttft_targets_ms_by_rank: Mapping[int, float] = field(default_factory=dict)
    """Tightest TTFT target per ``Priority.rank`` among recently arrived tenants
    (``AdmissionPolicy.active``); what priority protection keeps room for."""
    waited_s: float = 0.0
    """How long this request has been held in the driver's queue (0 on arrival): a held
    request that can no longer make its own target leaves instead of being served late."""
    cached_tokens: int = 0
    """Prompt tokens the chosen route already holds (the rest must be prefilled)."""
    queued_ahead: Sequence[QueuedRequest] = ()
    """Unstarted requests on the chosen route's first worker (displacement candidates)."""
    queue_ms_per_token: float = 0.0
    """Predicted TTFT saved per prompt token taken out of that worker's queue."""


class AdmissionPolicy:
    def __init__(self, params: AdmissionParams | None = None) -> None:
        self.params = params or AdmissionParams()
        self.fraction_gate = AdmitFractionGate(params=self.params.admit_fraction)
        self.rejecter = EarlyRejecter(params=self.params.predictive)
        self.detector = UtilizationDetector(params=self.params.saturation)
        self.protector = PriorityProtector(params=self.params.protect)
        self.active = ActiveTargets(self.params.protect.active_window_s)
        """Drivers ``observe`` every arrival here and pass ``by_rank`` in the context."""

    def decide(self, ctx: AdmissionContext, now_s: float) -> Verdict:
        req = ctx.req
        frac = effective_fraction(
            req.tenant, req.priority, ctx.admit_fractions, ctx.tenant_priorities
        )
        if frac < 1.0 and not self.fraction_gate.admit(req.tenant, frac):
            return Verdict(
                False, "admit_fraction", retry_after_s=1.0, inputs={"admit_fraction": frac}
            )
        v = self.rejecter.decide(req, ctx.predicted_ttft_ms, ctx.drain_s, ctx.waiting_by_rank)
        # premium is never shed, but may displace too; with shedding off, late is served
        shedding = self.params.predictive.shed_hopeless
        if ctx.queued_ahead and (
            v.reason == "hopeless" or (shedding and v.reason == "late_but_top_priority")
        ):
            d = self._displace(ctx, v)
            if d is not None:
                return d
        if not v.admitted:
            return v
        q = self.params.queue
        pv = self.protector.decide(
            req, ctx.predicted_ttft_ms, ctx.drain_s * 1000.0, ctx.active_ttft_targets_ms_by_rank,
            ctx.waited_s * 1000.0,
        )  # fmt: skip
        if not pv.admitted and pv.reason == "queue_timeout":
            return pv
        if not pv.admitted:
            hold = self.params.protect
            if hold.hold and ctx.queued < hold.max_held:  # held until the queue ahead drains
                return Verdict(False, pv.reason, queue=True, inputs=pv.inputs)
            return pv
        if ctx.saturation >= 1.0 and q.max_size > 0:
            if ctx.queued < q.max_size:
                return Verdict(
                    False, "saturated", queue=True, inputs={"saturation": ctx.saturation}
                )
            return Verdict(
                False, "queue_full", retry_after_s=1.0, inputs={"saturation": ctx.saturation}
            )
        return v if v.reason != "ok" else ADMIT

    def may_displace(self, req: RouteRequest, predicted_ttft_ms: float | None) -> bool:
        """Whether ``decide`` could displace for this request, i.e. the rejecter will judge
        it late: drivers gather ``queued_ahead`` (a walk over a worker's queue) only then."""
        pred = self.params.predictive
        return (
            self.params.displace.enabled
            and pred.enabled
            and predicted_ttft_ms is not None
            and predicted_ttft_ms > req.ttft_target_ms * pred.slack_ratio
        )

    def _displace(self, ctx: AdmissionContext, v: Verdict) -> Verdict | None:
        req = ctx.req
        assert ctx.predicted_ttft_ms is not None  # the rejecter only judges a prediction
        victim = pick_victim(
            self.params.displace,
            rank=req.priority.rank,
            uncached_tokens=max(0, req.prompt_tokens - ctx.cached_tokens),
            predicted_ttft_ms=ctx.predicted_ttft_ms,
            target_ms=req.ttft_target_ms,
            queued=ctx.queued_ahead,
            queue_ms_per_token=ctx.queue_ms_per_token,
        )
        if victim is None:
            return None
        inputs = {**v.inputs, "victim": victim.request_id,
                  "victim_uncached_tokens": victim.uncached_tokens}  # fmt: skip
        return Verdict(True, "displacing", inputs=inputs, displace=victim.request_id)

    def queue_deadline_s(self, req: RouteRequest, now_s: float) -> float:
        """When a queued request must give up: its wait budget or TTFT target, if sooner.
        With protection holding on, the budget is the larger of the two queues' (a
        lower class held for a higher one may wait as long as its own target allows)."""
        budget = self.params.queue.max_wait_s
        if self.params.protect.hold:
            budget = max(budget, self.params.protect.max_hold_s)
        return now_s + min(budget, req.ttft_target_ms / 1000.0)
