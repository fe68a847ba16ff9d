"""Background publishing: a daemon thread derives snapshots from the accumulator with the
shared derivation and writes them through the control plane's ``Store``
(``publish_snapshot``: the same keys and round trip as the agent's).

The engine thread only calls ``notify()`` (an ``Event.set``). The publisher thread
publishes at most every ``interval_s`` while steps arrive and every ``heartbeat_s``
while idle, each write bounded by ``publish_timeout_s``. The ``Store`` is async; the
thread drives it on an event loop of its own, so nothing runs on vLLM's loop. Failures
are counted, logged once per outage (and every 100th failure), retried with an
exponential backoff, never raised: telemetry must not hurt serving. Only the newest
snapshot is ever written (each is derived at publish time), so an outage costs no memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from controlplane.schemas import WorkerSnapshot
from workers.telemetry.derive import DeriveConfig, DeriveState, Identity, derive, mark_down
from workers.vllm_plugin.accumulator import StatsAccumulator

log = logging.getLogger("vllm.slaplane_plugin")  # vLLM's handler when inside vLLM

_LOG_EVERY = 100
"""While an outage lasts, repeat the warning every this many failed publishes."""


class SnapshotStore(Protocol):
    """The part of ``controlplane.state.Store`` the plugin uses."""

    async def publish_snapshot(self, snap: WorkerSnapshot) -> None: ...
    async def close(self) -> None: ...


class Publisher:
    """Owns the daemon thread. ``notify``/``start``/``stop`` are safe from any thread;
    ``snapshot``/``publish_once`` belong to the publisher thread (or to the caller
    while the thread is not running)."""

    def __init__(
        self,
        acc: StatsAccumulator,
        open_store: Callable[[], SnapshotStore],
        ident: Identity,
        *,
        derive_config: DeriveConfig = DeriveConfig(),
        interval_s: float = 0.1,
        heartbeat_s: float = 1.0,
        publish_timeout_s: float = 1.0,
        max_backoff_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.acc = acc
        self.ident = ident
        self.derive_config = derive_config
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.publish_timeout_s = publish_timeout_s
        self.max_backoff_s = max_backoff_s
        self._open_store = open_store
        self._store: SnapshotStore | None = None
        self._mono = monotonic
        self._wall_ms = wall_ms
        self._state = DeriveState()
        self._loop = asyncio.new_event_loop()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._final = True
        self._thread: threading.Thread | None = None
        self._closed = False
        self.published_total = 0
        self.errors_total = 0
        self.failing_for = 0
        """Consecutive failed publishes (0 while the store takes them)."""
        self.record_errors_total = 0
        """Failures inside ``record()`` (counted by the stat logger, reported here)."""
        self.last_error: str | None = None

    # --- any thread --------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="slaplane-publisher", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, *, final: bool = True, timeout_s: float | None = None) -> None:
        """Stop publishing; with ``final`` publish one last snapshot marked down. Waits at
        most ``timeout_s`` (default: two publish timeouts plus a second)."""
        self._final = final
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            wait_s = 2 * self.publish_timeout_s + 1.0 if timeout_s is None else timeout_s
            self._thread.join(wait_s)
            return  # the thread publishes the final snapshot and closes the store
        if final:
            self.publish_once(up=False)
        self._shutdown()

    # --- publisher thread --------------------------------------------------
    def snapshot(self, *, up: bool = True) -> WorkerSnapshot:
        """Derive the next snapshot from the accumulator's totals (advances the state)."""
        ts_ms = self._wall_ms()
        snap, self._state = derive(
            self._state,
            self.acc.reading(),
            ident=self.ident,
            ts_ms=ts_ms,
            mono_s=self._mono(),
            config=self.derive_config,
        )
        if not up:
            snap, self._state = mark_down(self._state, ident=self.ident, ts_ms=ts_ms)
        diag = {
            "plugin_publish_errors_total": float(self.errors_total),
            "plugin_record_errors_total": float(self.record_errors_total),
        }
        diag = {k: v for k, v in diag.items() if v}  # present only once something failed
        return replace(snap, extra={**snap.extra, **diag}) if diag else snap

    def publish_once(self, *, up: bool = True) -> bool:
        """Derive and publish now, bounded by ``publish_timeout_s``; False (counted,
        logged once per outage) on any failure."""
        try:
            snap = self.snapshot(up=up)
            if self._store is None:
                self._store = self._open_store()
            self._loop.run_until_complete(
                asyncio.wait_for(self._store.publish_snapshot(snap), self.publish_timeout_s)
            )
        except Exception as exc:  # never let telemetry escape
            self.errors_total += 1
            self.failing_for += 1
            self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.failing_for == 1 or self.failing_for % _LOG_EVERY == 0:
                log.warning(
                    "slaplane plugin: publish failed (%d in a row, retrying with backoff): %s",
                    self.failing_for,
                    self.last_error,
                )
            return False
        if self.failing_for:
            log.info("slaplane plugin: publishing again after %d failures", self.failing_for)
        self.failing_for = 0
        self.published_total += 1
        return True

    def _backoff_s(self) -> float:
        if not self.failing_for:
            return 0.0
        return float(min(self.max_backoff_s, 0.1 * 2 ** min(self.failing_for - 1, 30)))

    def _run(self) -> None:
        last_pub = -1e18
        try:
            while not self._stop.is_set():
                self._wake.wait(timeout=self.heartbeat_s)
                self._wake.clear()
                if self._stop.is_set():
                    break
                wait_s = max(self._backoff_s(), self.interval_s - (self._mono() - last_pub))
                if wait_s > 0 and self._stop.wait(wait_s):
                    break
                self.publish_once()
                last_pub = self._mono()
            if self._final:
                self.publish_once(up=False)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._store is not None:
            with contextlib.suppress(Exception):  # best effort at shutdown
                self._loop.run_until_complete(
                    asyncio.wait_for(self._store.close(), self.publish_timeout_s)
                )
        self._loop.close()
