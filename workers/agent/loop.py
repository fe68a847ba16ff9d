"""The agent's async run loop: scrape on a fixed cadence, derive, hand off to a publisher.

Scraping and publishing are decoupled through a one-slot mailbox: the scrape loop
never waits for the store, and when the store is slow or down the publisher
writes only the newest snapshot (older ones are superseded, never queued up), so
a Redis outage costs neither scrape cadence nor memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from controlplane.schemas import WorkerSnapshot
from controlplane.state.store import Store
from workers.agent.metrics import AgentMetrics
from workers.agent.parse import PageParser, ParseError
from workers.agent.scrape import PageSource, ScrapeError
from workers.telemetry.derive import DeriveConfig, DeriveState, Identity, derive, mark_down

log = logging.getLogger("slaplane.agent")

_LOG_EVERY_S = 10.0  # repeat a persisting error at most this often


class _Throttle:
    """Log a persisting condition once, then at most every ``every_s`` seconds."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last = -1e18
        self.suppressed = 0

    def due(self, now_s: float) -> bool:
        if now_s - self._last >= self.every_s:
            self._last = now_s
            return True
        self.suppressed += 1
        return False


class Agent:
    """One worker's telemetry pipeline. ``step()`` is a single scrape; ``run()`` loops it."""

    def __init__(
        self,
        source: PageSource,
        store: Store | None,
        ident: Identity,
        *,
        interval_s: float = 0.25,
        derive_config: DeriveConfig = DeriveConfig(),
        metrics: AgentMetrics | None = None,
        publish_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        on_snapshot: Callable[[WorkerSnapshot], None] | None = None,
        down_after_failures: int = 2,
    ) -> None:
        self.source = source
        self.store = store
        self.ident = ident
        self.interval_s = interval_s
        self.derive_config = derive_config
        self.metrics = metrics
        self.publish_timeout_s = publish_timeout_s
        self.clock = clock
        self.mono = mono
        self.on_snapshot = on_snapshot
        self.down_after_failures = max(1, down_after_failures)
        self.parser = PageParser()
        self.failures = 0
        self.state = DeriveState()
        self.scrapes = 0
        self._worker_ok: bool | None = None
        self._pending: WorkerSnapshot | None = None
        self._wake = asyncio.Event()
        self._store_ok = True
        self._store_log = _Throttle(_LOG_EVERY_S)
        self._worker_log = _Throttle(_LOG_EVERY_S)
        self._nonfinite_log = _Throttle(_LOG_EVERY_S)
        self._internal_log = _Throttle(_LOG_EVERY_S)

    # --- read side (collector) -------------------------------------------
    def latest(self) -> WorkerSnapshot | None:
        return self.state.snapshot

    def last_ok_s(self) -> float | None:
        return self.state.last_ok_ms / 1000.0 if self.state.last_ok_ms else None

    # --- one scrape ------------------------------------------------------
    async def step(self) -> WorkerSnapshot | None:
        """Scrape, parse and derive once; never raises.

        A failed scrape yields a 'down' snapshot once ``down_after_failures`` scrapes in a
        row failed; before that it yields None (nothing published, so the heartbeat
        ages by one interval) so that one slow answer on a busy host does not flap the
        worker to down."""
        t0 = self.mono()
        self.scrapes += 1
        try:
            text = await self.source.fetch()
            at_s, ts_ms = self.mono(), int(self.clock() * 1000)
            page = self.parser.parse(text)
            if self.parser.nonfinite:
                self._nonfinite(self.parser.nonfinite)
            if not page.is_vllm:
                raise ParseError("page holds no vLLM scheduler gauges")
            snap, state = derive(
                self.state, page, ident=self.ident, ts_ms=ts_ms, mono_s=at_s,
                config=self.derive_config,
            )  # fmt: skip
        except ScrapeError as exc:
            return self._down(exc.kind, exc.detail, t0)
        except ParseError as exc:
            if self.metrics:
                self.metrics.parse_error()
            return self._down("parse_error", str(exc), t0)
        except Exception as exc:  # a bug or an odd page must not end the agent's loop
            if self._internal_log.due(self.mono()):
                log.exception("agent step failed", extra={"worker": self.ident.worker})
            return self._down("internal", f"{type(exc).__name__}: {exc}", t0)
        self.state = state
        if self.metrics:
            self.metrics.scrape("ok", self.mono() - t0)
        if self._worker_ok is False:
            log.info("worker answering again", extra={"worker": self.ident.worker})
        self._worker_ok = True
        self.failures = 0
        return snap

    def _nonfinite(self, n: int) -> None:
        if self.metrics:
            self.metrics.nonfinite(n)
        if self._nonfinite_log.due(self.mono()):
            log.warning(
                "NaN/Inf values on the worker's page treated as missing",
                extra={"worker": self.ident.worker, "n": n},
            )

    def _down(self, result: str, detail: str, t0: float) -> WorkerSnapshot | None:
        if self.metrics:
            self.metrics.scrape(result, self.mono() - t0)
        self.failures += 1
        if self.failures < self.down_after_failures:
            log.debug(
                "worker scrape failed once", extra={"worker": self.ident.worker, "result": result}
            )
            return None
        if self._worker_ok is not False or self._worker_log.due(self.mono()):
            log.warning(
                "worker scrape failed; publishing it as down",
                extra={"worker": self.ident.worker, "result": result, "detail": detail[:300]},
            )
        self._worker_ok = False
        snap, self.state = mark_down(self.state, ident=self.ident, ts_ms=int(self.clock() * 1000))
        return snap

    # --- publishing ------------------------------------------------------
    async def publish(self, snap: WorkerSnapshot) -> bool:
        """Write one snapshot; errors are logged (throttled) and counted, never raised."""
        if self.store is None:
            return True
        try:
            await asyncio.wait_for(self.store.publish_snapshot(snap), self.publish_timeout_s)
        except Exception as exc:  # any store failure must not stop telemetry
            if self.metrics:
                self.metrics.publish(False)
            if self._store_ok or self._store_log.due(self.mono()):
                log.warning(
                    "snapshot publish failed; will keep scraping and retry with the next one",
                    extra={"worker": self.ident.worker, "error": f"{type(exc).__name__}: {exc}"},
                )
            self._store_ok = False
            return False
        if self.metrics:
            self.metrics.publish(True)
        if not self._store_ok:
            log.info("store reachable again", extra={"worker": self.ident.worker})
        self._store_ok = True
        return True

    def offer(self, snap: WorkerSnapshot) -> None:
        """Hand a snapshot to the publisher, replacing any not yet written."""
        self._pending = snap
        self._wake.set()

    async def _publisher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            snap, self._pending = self._pending, None
            if snap is not None:
                await self.publish(snap)

    # --- the loop --------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Scrape every ``interval_s`` on a fixed grid (overruns skip ticks, never drift)
        until ``stop`` is set; the last snapshot is flushed before returning."""
        publisher = asyncio.create_task(self._publisher(), name=f"publish-{self.ident.worker}")
        start = self.mono()
        tick = 0
        try:
            while not stop.is_set():
                snap = await self.step()
                if snap is not None:
                    self.offer(snap)
                    if self.on_snapshot is not None:
                        try:
                            self.on_snapshot(snap)
                        except Exception:  # the caller's hook must not end the loop
                            if self._internal_log.due(self.mono()):
                                log.exception("on_snapshot hook failed")
                tick = max(tick + 1, int((self.mono() - start) / self.interval_s) + 1)
                delay = start + tick * self.interval_s - self.mono()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            if self._pending is not None:
                await self.publish(self._pending)
            await self.source.close()


async def serve_metrics(
    registry: CollectorRegistry, port: int, host: str = "0.0.0.0"
) -> web.AppRunner:
    """Serve ``registry`` on ``http://host:port/metrics``; the caller cleans up the runner."""
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
