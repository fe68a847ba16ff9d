"""The gateway's side of admission: feeds the pure policy (``policy/admission/``) from
live state, and carries out what it says.

Per request: route, price the queue on the chosen first worker, build the
``AdmissionContext`` (who waits at which priority, the controller's admit fractions,
saturation, the active higher-class targets, and, when the request is predicted late,
this replica's unstarted requests on that worker), then admit, hold in the
``WaitQueue`` until capacity frees or the deadline passes, displace an unstarted
request in its favour, or refuse with a 429 and Retry-After. The replay driver does
the same against its modelled workers; the rule itself lives only in the policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from controlplane.errors import RateLimited
from controlplane.gateway.cluster import ClusterState
from controlplane.gateway.serve import Outcome
from controlplane.gateway.tenants import TenantDirectory
from controlplane.gateway.unstarted import UnstartedRequests
from controlplane.gateway.waitqueue import WaitQueue
from controlplane.policy.admission import AdmissionContext, AdmissionPolicy
from controlplane.policy.predictor import (
    LatencyPredictor,
    queue_ms_per_token,
    queued_prompt_tokens,
)
from controlplane.policy.types import RouteDecision, RouteRequest

log = logging.getLogger("slaplane.gateway")


class AdmissionGate:
    def __init__(
        self,
        policy: AdmissionPolicy,
        state: ClusterState,
        predictor: LatencyPredictor,
        tenants: TenantDirectory,
        route: Callable[[RouteRequest], RouteDecision],
    ) -> None:
        self.policy = policy
        self.state = state
        self.predictor = predictor
        self.tenants = tenants
        self.route = route
        self.waiting_by_rank: dict[int, int] = {}
        """Admitted requests not yet at their first token, per ``Priority.rank``."""
        self.queued = 0
        """Requests held in ``waitq`` now."""
        self.waitq = WaitQueue()
        """Held requests, released best priority first when capacity may have freed."""
        self.unstarted = UnstartedRequests()
        """Sent, prefill not begun: what admission may displace (``unstarted.py``)."""

    async def admit(self, rreq: RouteRequest, out: Outcome) -> RouteDecision:
        """The route to serve ``rreq`` on, once admitted; raises ``RateLimited`` (429)."""
        deadline = None
        ticket = (0, 0)
        self.policy.active.observe(
            rreq.tenant, rreq.priority.rank, rreq.ttft_target_ms, time.time()
        )
        while True:
            d = self.route(rreq)
            first = d.prefill or d.decode
            ctx = self._context(rreq, d, first, out, held=deadline is not None)
            v = self.policy.decide(ctx, time.time())
            out.predicted_ttft_ms = d.predicted_ttft_ms
            if v.displace is not None:
                self._displace(first, v.displace, ctx.drain_s)
            if v.admitted:
                out.drain_s = ctx.drain_s
                if deadline is not None:
                    self.waitq.wake()  # pass the turn on: capacity may suffice for more
                return d
            if v.queue:
                now = time.time()
                if deadline is None:
                    deadline = self.policy.queue_deadline_s(rreq, now)
                    ticket = self.waitq.ticket(rreq.priority.rank)
                    self.queued += 1
                    out.queued_s = time.perf_counter()
                if now < deadline:
                    try:
                        await self.waitq.wait(ticket, deadline - now)
                    except asyncio.CancelledError:
                        self.queued -= 1
                        raise
                    continue
                v_reason, retry = "queue_timeout", 1.0
            else:
                v_reason, retry = v.reason, v.retry_after_s or 1.0
            if deadline is not None:
                self.queued -= 1
            raise RateLimited(
                f"Request not admitted ({v_reason}).", code=v_reason, retry_after_s=retry
            )

    def _context(
        self, rreq: RouteRequest, d: RouteDecision, first: str, out: Outcome, held: bool
    ) -> AdmissionContext:
        snap = self.state.workers[first]
        now = time.time()
        drain_s = self.predictor.drain_ms(snap, queued_prompt_tokens(snap, self.state.view()))
        sat = 0.0
        if self.policy.params.queue.max_size > 0:
            pool = self.state.pools.get((rreq.model, snap.role), [])
            sat = self.policy.detector.saturation((self.state.workers[w] for w in pool), now)
        late = self.policy.may_displace(rreq, d.predicted_ttft_ms)
        return AdmissionContext(
            rreq, d.predicted_ttft_ms, drain_s / 1000, self.waiting_by_rank,
            self.state.control.admit, self.tenants.priorities, sat,
            0 if held else self.queued, self.policy.active.by_rank(now),
            0.0 if out.queued_s is None else time.perf_counter() - out.queued_s,
            d.cached_tokens, self.unstarted.queued(first, now) if late else (),
            queue_ms_per_token(self.predictor, snap) if late else 0.0,
        )  # fmt: skip

    def _displace(self, worker: str, request_id: str, drain_s: float) -> None:
        retry = min(60.0, max(1.0, drain_s))
        if self.unstarted.displace(worker, request_id, retry):
            log.info("displaced", extra={"worker": worker, "request_id": request_id})

    def dequeued(self, out: Outcome) -> None:
        """An admitted request leaves the hold queue (if it was held) for service."""
        if out.queued_s is not None:
            self.queued -= 1
            out.queue_ms = (time.perf_counter() - out.queued_s) * 1000
