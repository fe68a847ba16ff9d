"""Batched, off-the-hot-path writer of ``RequestRecord``s to the requests stream.

Requests append to a list (no await); a background task flushes every
``flush_s`` or sooner when ``batch`` records are waiting. If the store is down
the records stay buffered (bounded; the oldest are dropped and counted past
``max_buffer``) and go out once it is back.

A flush takes its chunk out of the buffer before awaiting the store, so records
added (or dropped for overflow) meanwhile cannot shift what it removes afterwards;
a failed or cancelled write puts the chunk back at the front, in order. Flushes are
serialised (the run loop and the shutdown flush may overlap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from controlplane.gateway.metrics import GatewayMetrics
from controlplane.schemas import RequestRecord
from controlplane.state.store import Store

log = logging.getLogger("slaplane.gateway.recorder")


class RequestRecorder:
    def __init__(
        self,
        store: Store,
        cluster: str,
        metrics: GatewayMetrics,
        flush_s: float = 0.25,
        batch: int = 256,
        max_buffer: int = 100_000,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.metrics = metrics
        self.flush_s = flush_s
        self.batch = batch
        self.max_buffer = max_buffer
        self._buf: list[RequestRecord] = []
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()
        self.dropped = 0
        self._dropped_metric = metrics.records_dropped.labels(cluster)

    def add(self, rec: RequestRecord) -> None:
        self._buf.append(rec)
        self._trim()
        if len(self._buf) >= self.batch:
            self._kick.set()

    def _trim(self) -> None:
        """Drop (and count) the oldest records past ``max_buffer``."""
        drop = len(self._buf) - self.max_buffer
        if drop > 0:
            del self._buf[:drop]
            self.dropped += drop
            self._dropped_metric.inc(drop)

    async def flush(self) -> None:
        async with self._lock:
            while self._buf:
                chunk = self._buf[: self.batch]
                del self._buf[: len(chunk)]
                try:
                    await self.store.append_requests(self.cluster, chunk)
                except BaseException:  # failed or cancelled: not written, keep them
                    self._buf[:0] = chunk
                    self._trim()
                    raise

    async def run(self) -> None:
        backoff = self.flush_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), backoff)
            self._kick.clear()
            try:
                await self.flush()
                backoff = self.flush_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.store_failures.labels(self.cluster, "append_requests").inc()
                log.warning(
                    "request records buffered", extra={"n": len(self._buf), "err": repr(exc)}
                )
                backoff = min(5.0, backoff * 2)
