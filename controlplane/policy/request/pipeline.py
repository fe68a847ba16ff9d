"""One request path for every driver: route → price the queue → admission verdict → hold,
displace, dispatch or refuse, with the ledger's bookkeeping for each answer.

The gateway (``gateway/admit.py``) and the replay (``replay/driver.py``) both call
``RequestPipeline.admit`` with their own clock and their own ``ClusterView`` and carry
out the answer with their own I/O (an upstream call and a wait queue; a sim engine and
an event heap). Nothing about *what* to decide is written in a driver, so replay predicts
what the live gateway will do. Rate limits and concurrency run before this, in the driver
(a store round trip live, ``LocalBuckets`` in replay), from ``bucket_specs``.

``decide`` is pure with respect to the ledger (it reads, never writes); ``apply``
records the answer (dispatch, hold, release); ``admit`` does both.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from controlplane.policy.predictor import (
    LatencyPredictor,
    queue_ms_per_token,
    queued_prompt_tokens,
)
from controlplane.policy.request.admission import AdmissionContext, AdmissionPolicy
from controlplane.policy.request.ledger import RequestLedger
from controlplane.policy.request.routers.router import Router
from controlplane.policy.types import ADMIT, ClusterView, RouteDecision, RouteRequest, Verdict
from controlplane.schemas import Priority

NO_WORKER = Verdict(False, "no_worker", retry_after_s=1.0)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one request at one moment (an arrival or a held request's recheck)."""

    request_id: str
    verdict: Verdict
    route: RouteDecision | None = None
    """None: no usable worker for the model (``verdict.reason == "no_worker"``)."""
    drain_s: float = 0.0
    """Predicted queue drain on the route's first worker."""
    hold_until_s: float | None = None
    """Set when the request is (still) held: when it must give up (429 queue_timeout)."""

    @property
    def admitted(self) -> bool:
        return self.verdict.admitted and self.route is not None

    @property
    def held(self) -> bool:
        return self.hold_until_s is not None

    @property
    def displace(self) -> str | None:
        return self.verdict.displace

    def key(self) -> tuple[object, ...]:
        """What must match request by request between drivers (differential test)."""
        r = self.route
        return (
            self.request_id,
            self.verdict.admitted,
            self.verdict.reason,
            self.verdict.queue,
            self.verdict.displace,
            None if r is None else (r.mode, r.prefill, r.decode),
        )


@dataclass(slots=True)
class ControlInputs:
    """What the controller and the tenant directory feed admission, per driver."""

    admit_fractions: Mapping[str, float] = field(default_factory=dict)
    tenant_priorities: Mapping[str, Priority] = field(default_factory=dict)


class RequestPipeline:
    def __init__(
        self,
        router: Router,
        admission: AdmissionPolicy,
        predictor: LatencyPredictor,
        ledger: RequestLedger | None = None,
        *,
        admission_enabled: bool = True,
    ) -> None:
        self.router = router
        self.admission = admission
        self.predictor = predictor
        self.ledger = ledger if ledger is not None else RequestLedger()
        self.admission_enabled = admission_enabled
        """False: every routable request is admitted (a "no control" baseline)."""

    def arrive(self, req: RouteRequest, now_s: float) -> None:
        """Every arrival, before rate limits: priority protection follows active tenants."""
        self.admission.active.observe(req.tenant, req.priority.rank, req.ttft_target_ms, now_s)

    def decide(
        self,
        req: RouteRequest,
        view: ClusterView,
        now_s: float,
        control: ControlInputs,
        exclude: Collection[str] = (),
    ) -> Decision:
        rid = req.request_id
        d = self.router.route(req, view, now_s, exclude)
        if d is None:
            return Decision(rid, NO_WORKER)
        first = d.prefill if d.prefill is not None else d.decode
        snap = view.workers[first]
        drain_s = self.predictor.drain_ms(snap, queued_prompt_tokens(snap, view)) / 1000.0
        if not self.admission_enabled:
            return Decision(rid, ADMIT, d, drain_s)
        ledger = self.ledger
        entry = ledger.get(rid)
        held = entry is not None and entry.held
        adm = self.admission
        sat = 0.0
        if adm.params.queue.max_size > 0:
            pool = view.pools.get((req.model, snap.role), ())
            sat = adm.detector.saturation((view.workers[w] for w in pool), now_s)
        late = adm.may_displace(req, d.predicted_ttft_ms)
        since = entry.held_since_s if entry is not None and held else None
        ctx = AdmissionContext(
            req=req,
            predicted_ttft_ms=d.predicted_ttft_ms,
            drain_s=drain_s,
            waiting_by_rank=ledger.waiting_by_rank,
            admit_fractions=control.admit_fractions,
            tenant_priorities=control.tenant_priorities,
            saturation=sat,
            queued=0 if held else ledger.held_count,
            active_ttft_targets_ms_by_rank=adm.active.by_rank(now_s),
            waited_s=0.0 if since is None else max(0.0, now_s - since),
            cached_tokens=d.cached_tokens,
            queued_ahead=(
                ledger.unstarted(first, now_s, snap.waiting, snap.ts_ms / 1000.0) if late else ()
            ),
            queue_ms_per_token=queue_ms_per_token(self.predictor, snap) if late else 0.0,
        )
        v = adm.decide(ctx, now_s)
        if v.admitted or not v.queue:
            return Decision(rid, v, d, drain_s)
        deadline = (
            entry.deadline_s
            if held and entry is not None and entry.deadline_s is not None
            else adm.queue_deadline_s(req, now_s)
        )
        if now_s >= deadline:
            return Decision(rid, Verdict(False, "queue_timeout", retry_after_s=1.0), d, drain_s)
        return Decision(rid, v, d, drain_s, hold_until_s=deadline)

    def apply(self, req: RouteRequest, dec: Decision, now_s: float, view: ClusterView) -> None:
        """Record the answer: release a displaced request, dispatch, hold or forget."""
        ledger = self.ledger
        if dec.displace is not None:
            ledger.finish(dec.displace)
        rid = req.request_id
        if dec.admitted:
            assert dec.route is not None
            self.dispatch(req, dec.route, now_s, view, dec.drain_s)
        elif dec.hold_until_s is not None:
            ledger.hold(rid, req.priority.rank, now_s, dec.hold_until_s)
        else:
            ledger.finish(rid)

    def admit(
        self, req: RouteRequest, view: ClusterView, now_s: float, control: ControlInputs
    ) -> Decision:
        dec = self.decide(req, view, now_s, control)
        self.apply(req, dec, now_s, view)
        return dec

    def dispatch(
        self,
        req: RouteRequest,
        route: RouteDecision,
        now_s: float,
        view: ClusterView,
        drain_s: float = 0.0,
    ) -> None:
        """Send on ``route`` (also a retry's new route, whose queue is unknown: drain 0,
        so it is never displaced there)."""
        self.router.observe(req, route, view, now_s)
        self.ledger.dispatch(
            req.request_id,
            req.priority.rank,
            route,
            max(0, req.prompt_tokens - route.cached_tokens),
            now_s,
            now_s + drain_s,
        )

    def reroute(
        self, req: RouteRequest, view: ClusterView, now_s: float, exclude: Collection[str]
    ) -> RouteDecision | None:
        """A retry after a worker failed before its first byte: admitted already, so
        only a new route (or None), dispatched at once."""
        d = self.router.route(req, view, now_s, exclude)
        if d is not None:
            self.dispatch(req, d, now_s, view)
        return d
