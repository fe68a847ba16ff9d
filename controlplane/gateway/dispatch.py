"""Dispatch: from an admitted route to the first upstream byte.

One attempt is the P/D handoff (prefill with ``max_tokens=1`` and
``do_remote_decode``, then the decode request carrying the prefill's
``kv_transfer_params``) or the one-hop request. An attempt that fails before its first
byte is retried on a new route without the failed worker (circuit breakers count the
failure); after the first byte nothing is retried, the client has bytes already.

Displacement is an explicit signal: a request the pipeline may displace has a future
in the ``AdmissionGate``; its attempt races that signal, and if the signal wins the
attempt is cancelled (the worker sees the disconnect and aborts the request) and the
client gets 429 ``displaced``. Requests that cannot be displaced (no queue ahead when
admitted, or a retry) run their attempt directly, without the race's extra task.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from controlplane.errors import RateLimited, UpstreamError
from controlplane.gateway.admit import AdmissionGate
from controlplane.gateway.breaker import CircuitBreakers
from controlplane.gateway.cluster import ClusterState
from controlplane.gateway.config import GatewaySettings
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.parse import ParsedRequest
from controlplane.gateway.relay import Timings
from controlplane.gateway.serve import Outcome
from controlplane.gateway.upstream import UpstreamStream, WorkerClient
from controlplane.policy.types import RouteDecision, RouteRequest

log = logging.getLogger("slaplane.gateway")

Opened = tuple[UpstreamStream, AsyncIterator[bytes], bytes]
"""An upstream response, its chunk iterator, and its first chunk."""


class Dispatcher:
    def __init__(
        self,
        settings: GatewaySettings,
        client: WorkerClient,
        state: ClusterState,
        breakers: CircuitBreakers,
        metrics: GatewayMetrics,
        gate: AdmissionGate,
    ) -> None:
        self.s = settings
        self.client = client
        self.state = state
        self.breakers = breakers
        self.metrics = metrics
        self.gate = gate

    async def open(
        self, pr: ParsedRequest, rreq: RouteRequest, decision: RouteDecision, out: Outcome,
        t: Timings,
    ) -> Opened:  # fmt: skip
        """The first upstream byte of ``rreq`` on ``decision`` or a retry's route; raises
        ``UpstreamError`` when every attempt failed, ``RateLimited`` when displaced."""
        excluded: set[str] = set()
        for attempt in range(self.s.max_attempts):
            if attempt:
                decision = self.gate.reroute(rreq, excluded)
            out.prefill_worker = decision.prefill or ""
            out.decode_worker = decision.decode
            try:
                opened = await self._attempt_or_displaced(pr, rreq, decision, out, t)
            except UpstreamError as e:
                failed = e.worker or decision.decode
                excluded.add(failed)
                if self.breakers.failure(failed, time.time()):
                    self.metrics.breaker_open.labels(self.s.cluster, failed).set(1)
                    log.warning("circuit open", extra={"worker": failed, "err": e.message})
                self.metrics.retries.labels(self.s.cluster, failed, e.code).inc()
                if attempt + 1 >= self.s.max_attempts:
                    raise
                continue
            self.gate.started(rreq.request_id)
            return opened
        raise AssertionError("unreachable: the last attempt raises")

    async def _attempt_or_displaced(
        self, pr: ParsedRequest, rreq: RouteRequest, d: RouteDecision, out: Outcome, t: Timings
    ) -> Opened:
        signal = self.gate.displacement_signal(rreq.request_id)
        if signal is None:
            return await self._attempt(pr, rreq, d, out, t)
        task = asyncio.ensure_future(self._attempt(pr, rreq, d, out, t))
        try:
            await asyncio.wait((task, signal), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():  # displaced, or this handler was cancelled (client gone)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, UpstreamError):
                    await task
        if task.cancelled() and signal.done() and not signal.cancelled():
            raise RateLimited(
                "Request not admitted (displaced): its place went to a request that can "
                "still meet its deadline.",
                code="displaced",
                retry_after_s=signal.result(),
            )
        return task.result()

    async def _attempt(
        self, pr: ParsedRequest, rreq: RouteRequest, d: RouteDecision, out: Outcome, t: Timings
    ) -> Opened:
        """One try on one route (dispatched in the ledger), up to the first upstream byte."""
        body: dict[str, Any] | bytes = pr.raw or pr.body  # one hop: the client's bytes as-is
        m = self.metrics
        if d.prefill is not None:
            m.route(pr.model, d.policy, "prefill", d.prefill).inc()
            body = await self._prefill(pr, d.prefill)
            self.gate.ledger.prefill_done(rreq.request_id)
        m.route(pr.model, d.policy, "decode" if d.prefill else "both", d.decode).inc()
        try:
            t.upstream_s = time.perf_counter()  # a non-streamed response's generation start
            up = await self.client.open_stream(self.state.url(d.decode) + pr.path, body)
            it = up.chunks().__aiter__()
            try:
                first = await it.__anext__()
            except StopAsyncIteration:
                first = b""
            except BaseException as exc:
                up.close()
                if isinstance(exc, Exception):
                    raise UpstreamError(
                        f"worker {d.decode} failed before the first byte: {exc!r}"
                    ) from exc
                raise
            self.breakers.success(d.decode)
            return up, it, first
        except UpstreamError as e:
            e.worker = e.worker or d.decode
            raise

    async def _prefill(self, pr: ParsedRequest, worker: str) -> dict[str, Any] | bytes:
        """P/D step 1: prefill with max_tokens=1 and do_remote_decode; returns the decode body
        (the client's bytes with ``kv_transfer_params`` appended when that is safe, so the
        prompt is not serialised a second time on the TTFT path)."""
        body = copy.copy(pr.body)
        body["max_tokens"] = 1
        if "max_completion_tokens" in body:
            body["max_completion_tokens"] = 1
        body["stream"] = False
        body.pop("stream_options", None)
        body["kv_transfer_params"] = {"do_remote_decode": True}
        try:
            resp = await self.client.post_json(self.state.url(worker) + pr.path, body)
        except UpstreamError as e:
            e.worker = worker
            raise
        self.breakers.success(worker)
        params = resp.get("kv_transfer_params")
        raw = pr.raw.rstrip()
        if raw.endswith(b"}") and "kv_transfer_params" not in pr.body and len(pr.body) > 0:
            extra = json.dumps(params, separators=(",", ":")).encode()
            return raw[:-1] + b',"kv_transfer_params":' + extra + b"}"
        dbody = dict(pr.body)
        dbody["kv_transfer_params"] = params
        return dbody
