"""The gateway's adapter to the request pipeline (``policy/request/pipeline.py``).

Per request it asks the pipeline for a decision over the live ``ClusterState`` and
carries it out: return the route, wait in the ``WaitQueue`` until capacity may have
freed (the pipeline's hold deadline), cancel the upstream call of a displaced request,
or raise the 429/503 the decision names. What to decide, and the bookkeeping of what is
in flight, live in the pipeline and its ledger, shared with the replay driver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from controlplane.errors import NoCapacity, RateLimited
from controlplane.gateway.cluster import ClusterState
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.serve import Outcome
from controlplane.gateway.tenants import TenantDirectory
from controlplane.gateway.waitqueue import WaitQueue
from controlplane.policy.request.pipeline import ControlInputs, Decision, RequestPipeline
from controlplane.policy.types import RouteDecision, RouteRequest

log = logging.getLogger("slaplane.gateway")


class AdmissionGate:
    def __init__(
        self,
        pipeline: RequestPipeline,
        state: ClusterState,
        tenants: TenantDirectory,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.time,
        poll_s: float = 0.05,
    ) -> None:
        self.pipeline = pipeline
        self.ledger = pipeline.ledger
        self.state = state
        self.tenants = tenants
        self.metrics = metrics
        self.clock = clock
        self.waitq = WaitQueue(poll_s, clock)
        """Held requests, released best priority first when capacity may have freed."""
        self._displaceable: dict[str, asyncio.Future[float]] = {}
        """Admitted requests the pipeline may still displace (a queue was ahead of them
        and their first upstream byte has not come back): the signal their dispatch
        races, resolved with the Retry-After to answer (this replica's requests only)."""
        self.decisions: list[Decision] | None = None
        """Every decision in order, when a caller sets a list here (differential test)."""

    @property
    def queued(self) -> int:
        """Requests held now."""
        return self.ledger.held_count

    def _control(self) -> ControlInputs:
        return ControlInputs(self.state.control.admit, self.tenants.priorities)

    def arrive(self, rreq: RouteRequest) -> None:
        self.pipeline.arrive(rreq, self.clock())

    async def admit(self, rreq: RouteRequest, out: Outcome) -> RouteDecision:
        """The route to serve ``rreq`` on, once admitted and dispatched in the ledger;
        raises ``RateLimited`` (429) or ``NoCapacity`` (503). The caller must
        ``release`` on every exit path."""
        ticket: tuple[int, int] | None = None
        pipeline = self.pipeline
        while True:
            now = self.clock()
            view = self.state.view()
            dec = pipeline.decide(rreq, view, now, self._control())
            pipeline.apply(rreq, dec, now, view)
            if self.decisions is not None and not (dec.held and ticket is not None):
                self.decisions.append(dec)
            d = dec.route
            if d is None:
                raise NoCapacity(
                    f"No worker available for model `{rreq.model}`.", retry_after_s=1.0
                )
            self.count_fallbacks(d)
            out.predicted_ttft_ms = d.predicted_ttft_ms
            if dec.displace is not None:
                self._displace(dec.displace, dec.drain_s)
            if dec.admitted:
                out.drain_s = dec.drain_s
                if ticket is not None:
                    self.waitq.wake()  # pass the turn on: capacity may suffice for more
                    if out.queued_s is not None:
                        out.queue_ms = (time.perf_counter() - out.queued_s) * 1000
                if dec.drain_s > 0.0:
                    fut = asyncio.get_running_loop().create_future()
                    self._displaceable[rreq.request_id] = fut
                return d
            if dec.hold_until_s is not None:
                if ticket is None:
                    ticket = self.waitq.ticket(rreq.priority.rank)
                    out.queued_s = time.perf_counter()
                await self.waitq.wait(ticket, dec.hold_until_s)
                continue
            v = dec.verdict
            raise RateLimited(
                f"Request not admitted ({v.reason}).",
                code=v.reason,
                retry_after_s=v.retry_after_s or 1.0,
            )

    def displacement_signal(self, request_id: str) -> asyncio.Future[float] | None:
        return self._displaceable.get(request_id)

    def reroute(self, rreq: RouteRequest, exclude: set[str]) -> RouteDecision:
        """A retry's new route (admitted already), dispatched in the ledger; its queue is
        unknown, so it is not displaceable there."""
        self._drop_signal(rreq.request_id)
        d = self.pipeline.reroute(rreq, self.state.view(), self.clock(), exclude)
        if d is None:
            raise NoCapacity(f"No worker available for model `{rreq.model}`.", retry_after_s=1.0)
        self.count_fallbacks(d)
        return d

    def count_fallbacks(self, d: RouteDecision) -> None:
        for f in d.fallbacks:
            self.metrics.fallbacks.labels(self.state.cluster, f).inc()

    def started(self, request_id: str) -> None:
        """First upstream byte: it runs, so it can no longer be displaced."""
        self._drop_signal(request_id)
        self.ledger.started(request_id)

    def first_token(self, request_id: str) -> None:
        """The prompt is done: no longer queued prefill, and a held request may now fit."""
        self.ledger.first_token(request_id)
        self.waitq.wake()

    def release(self, request_id: str) -> None:
        """Every exit path of a request: idempotent."""
        self._drop_signal(request_id)
        self.ledger.finish(request_id)
        self.waitq.wake()  # a finished or refused request may have freed capacity

    def _drop_signal(self, request_id: str) -> None:
        fut = self._displaceable.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    def _displace(self, request_id: str, drain_s: float) -> None:
        fut = self._displaceable.pop(request_id, None)
        if fut is None or fut.done():
            return
        fut.set_result(min(60.0, max(1.0, drain_s)))
        log.info("displaced", extra={"request_id": request_id})
