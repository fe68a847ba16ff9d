"""Background publishing: a daemon thread that snapshots the accumulator and writes
it to Redis with the same keys and pipeline as ``RedisStore.publish_snapshot``.

The engine thread only calls ``notify()`` (an ``Event.set``). The thread publishes at
most every ``interval_s`` while steps arrive and every ``heartbeat_s`` while idle.
Failures are counted and backed off, never raised: telemetry must not hurt serving.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from controlplane.schemas import WorkerSnapshot
from controlplane.state import keys
from workers.vllm_plugin.accumulator import TelemetryAccumulator

log = logging.getLogger("vllm.slaplane_plugin")  # vLLM's handler when inside vLLM


class SnapshotSink(Protocol):
    def publish(self, snap: WorkerSnapshot) -> None: ...
    def close(self) -> None: ...


class RedisSnapshotSink:
    """Synchronous redis client (own connection pool), one pipeline per snapshot."""

    def __init__(self, url: str, *, socket_timeout_s: float = 1.0) -> None:
        import redis

        self._r: Any = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            health_check_interval=30,
        )

    def publish(self, snap: WorkerSnapshot) -> None:
        fields = snap.to_redis()
        c = snap.cluster
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(keys.worker_hash(c, snap.worker), mapping=fields)
        pipe.zadd(keys.workers_zset(c), {snap.worker: snap.ts_ms})
        pipe.xadd(
            keys.telemetry_stream(c),
            fields,
            maxlen=keys.TELEMETRY_STREAM_MAXLEN,
            approximate=True,
        )
        pipe.execute()

    def close(self) -> None:
        self._r.close()


class Publisher:
    """Owns the daemon thread; every public method is safe to call from any thread."""

    def __init__(
        self,
        acc: TelemetryAccumulator,
        sink: SnapshotSink,
        *,
        interval_s: float = 0.1,
        heartbeat_s: float = 1.0,
        max_backoff_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.acc = acc
        self.sink = sink
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.max_backoff_s = max_backoff_s
        self._mono = monotonic
        self._wall_ms = wall_ms
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published_total = 0
        self.errors_total = 0
        self.record_errors_total = 0
        """Failures inside ``record()`` (counted by the stat logger, reported here)."""
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="slaplane-publisher", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, *, final: bool = True, timeout_s: float = 2.0) -> None:
        """Stop the thread; with ``final`` publish one last snapshot marked ``up=False``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if final:
            self.publish_once(up=False)
        with contextlib.suppress(Exception):  # best effort at shutdown
            self.sink.close()

    def publish_once(self, *, up: bool = True) -> bool:
        """Snapshot and publish now; returns False (and counts) on failure."""
        try:
            snap = self.acc.snapshot(self._mono(), self._wall_ms(), up=up, extra=self._extra())
            self.sink.publish(snap)
        except Exception as exc:  # never let telemetry escape
            self.errors_total += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.errors_total == 1 or self.errors_total % 100 == 0:
                log.warning(
                    "slaplane plugin: publish failed (%d so far): %s",
                    self.errors_total,
                    self.last_error,
                )
            return False
        self.published_total += 1
        return True

    def _extra(self) -> dict[str, float]:
        return {
            "plugin_publish_errors_total": float(self.errors_total),
            "plugin_record_errors_total": float(self.record_errors_total),
            "plugin_published_total": float(self.published_total),
        }

    def _run(self) -> None:
        last_pub = -1e18
        backoff_s = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=self.heartbeat_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            wait_s = max(backoff_s, self.interval_s - (self._mono() - last_pub))
            if wait_s > 0 and self._stop.wait(wait_s):
                return
            ok = self.publish_once()
            last_pub = self._mono()
            backoff_s = 0.0 if ok else min(self.max_backoff_s, max(0.1, backoff_s * 2))
