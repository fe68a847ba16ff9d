"""The publisher: derives with the shared derivation, writes through a Store off the
engine's thread, rate-limits, heartbeats, bounds and backs off failures, logs them once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from controlplane.schemas import WorkerSnapshot
from controlplane.state import keys, open_store
from tests.conftest import free_port
from workers.telemetry.derive import Identity
from workers.vllm_plugin.accumulator import StatsAccumulator, StepSample
from workers.vllm_plugin.publisher import Publisher

IDENT = Identity(cluster="pc", worker="pw", role="prefill", model="m", source="plugin")
DEADLINE_S = 30.0


def _until(cond: Callable[[], bool], what: str) -> None:
    """Wait for ``cond`` with a generous deadline (no fixed sleeps)."""
    end = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class ListStore:
    """A Store's publishing half that keeps what it is given; can fail or hang."""

    def __init__(self, *, fail: bool = False) -> None:
        self.snaps: list[WorkerSnapshot] = []
        self.fail = fail
        self.hang = threading.Event()  # while set, publish_snapshot does not return
        self.entered = threading.Event()
        self.closed = False
        self.lock = threading.Lock()

    async def publish_snapshot(self, snap: WorkerSnapshot) -> None:
        self.entered.set()
        while self.hang.is_set():  # noqa: ASYNC110  (released from another thread)
            await asyncio.sleep(0.005)
        if self.fail:
            raise ConnectionError("down")
        with self.lock:
            self.snaps.append(snap)

    async def close(self) -> None:
        self.closed = True


def _pub(store: ListStore, **kw: Any) -> Publisher:
    return Publisher(StatsAccumulator(), lambda: store, IDENT, **kw)


def test_snapshots_are_derived_and_published_through_the_store() -> None:
    clock = [10.0]
    store = ListStore()
    pub = _pub(store, monotonic=lambda: clock[0], wall_ms=lambda: int(clock[0] * 1000))
    pub.acc.observe(StepSample(running=2, prompt_tokens=100, ttfts_s=(0.03,)))
    assert pub.publish_once()
    clock[0] += 0.5
    pub.acc.observe(StepSample(prompt_tokens=400, ttfts_s=(0.2, 0.2)))
    assert pub.publish_once()
    first, second = store.snaps
    assert (first.source, first.worker, first.role, first.model) == ("plugin", "pw", "prefill", "m")
    assert (first.seq, second.seq, second.ts_ms) == (1, 2, 10_500)
    assert first.ttft_p50_ms == pytest.approx(30.0)  # the (0.02, 0.04] bucket's middle
    assert second.prompt_tokens_per_s == pytest.approx(800.0)  # 400 tokens / 0.5 s
    assert second.prompt_tokens_total == 500 and second.running == 2
    assert second.extra["ttft_window_count"] == 2.0
    assert not any(k.startswith("plugin_") for k in second.extra)  # nothing failed
    pub.stop(final=True)
    down = store.snaps[-1]
    assert not down.up and down.seq > second.seq and store.closed


def test_rate_limited_while_busy() -> None:
    store = ListStore()
    pub = _pub(store, interval_s=60.0, heartbeat_s=60.0)
    pub.start()
    pub.notify()
    _until(lambda: pub.published_total == 1, "the first publish")
    for _ in range(1000):  # a burst of engine steps inside one interval: no more publishes
        pub.acc.observe(StepSample(generation_tokens=1))
        pub.notify()
    pub.stop(final=True, timeout_s=DEADLINE_S)
    assert [s.up for s in store.snaps] == [True, False]
    assert store.snaps[-1].generation_tokens_total == 1000 and store.closed


def test_heartbeat_when_idle() -> None:
    store = ListStore()
    pub = _pub(store, interval_s=0.01, heartbeat_s=0.02)
    pub.start()
    try:
        _until(lambda: len(store.snaps) >= 3, "three heartbeats without a step")
    finally:
        pub.stop(final=False)
    assert all(s.up for s in store.snaps)


def test_failures_are_counted_logged_once_and_backed_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ListStore(fail=True)
    pub = _pub(store, max_backoff_s=0.5)
    with caplog.at_level(logging.INFO, logger="vllm.slaplane_plugin"):
        results = [pub.publish_once() for _ in range(5)]
        backoffs = pub._backoff_s()
        store.fail = False
        assert pub.publish_once()
    pub.stop(final=False)
    assert results == [False] * 5
    assert pub.errors_total == 5 and pub.last_error == "ConnectionError: down"
    assert backoffs == 0.5  # 0.1, 0.2, 0.4, then the cap
    assert pub._backoff_s() == 0.0 and pub.failing_for == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "down" in warnings[0].getMessage()
    assert any("publishing again after 5" in r.getMessage() for r in caplog.records)
    # once something failed, the snapshot says so
    assert store.snaps[-1].extra["plugin_publish_errors_total"] == 5.0


def test_store_that_cannot_be_opened_is_a_counted_failure() -> None:
    def broken() -> ListStore:
        raise ValueError("unsupported store URL")

    pub = Publisher(StatsAccumulator(), broken, IDENT)
    assert not pub.publish_once() and pub.errors_total == 1
    pub.stop(final=False)


def test_a_hung_store_is_bounded_and_never_blocks_the_engine() -> None:
    store = ListStore()
    store.hang.set()
    pub = _pub(store, interval_s=0.0, heartbeat_s=0.05, publish_timeout_s=0.2)
    pub.start()
    try:
        pub.notify()
        _until(store.entered.is_set, "a publish in flight")
        # the engine thread goes on while the publisher is stuck in the store
        for _ in range(1000):
            pub.acc.observe(StepSample(generation_tokens=1))
            pub.notify()
        assert pub.acc.records_total == 1000
        _until(lambda: pub.errors_total >= 1, "the publish timeout")
        assert pub.last_error == "TimeoutError"
        store.hang.clear()
        _until(lambda: len(store.snaps) >= 1, "publishing to resume")
    finally:
        store.hang.clear()
        pub.stop(final=True, timeout_s=DEADLINE_S)
    assert store.snaps[-1].generation_tokens_total == 1000 and not store.snaps[-1].up


def test_redis_store_layout(redis_url: str) -> None:
    cluster = f"pc-{uuid.uuid4().hex[:6]}"
    ident = Identity(cluster=cluster, worker="pw", role="prefill", model="m", source="plugin")
    pub = Publisher(StatsAccumulator(), lambda: open_store(redis_url), ident, wall_ms=lambda: 1234)
    pub.acc.observe(StepSample(running=2, prompt_tokens=7, ttfts_s=(0.05,)))
    assert pub.publish_once(), pub.last_error
    snap = pub._state.snapshot
    pub.stop(final=False)
    r: Any = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        got = WorkerSnapshot.from_redis(r.hgetall(keys.worker_hash(cluster, "pw")))
        assert got == snap and got.source == "plugin" and got.running == 2
        assert r.zscore(keys.workers_zset(cluster), "pw") == 1234
        ((_, fields),) = r.xrange(keys.telemetry_stream(cluster))
        assert WorkerSnapshot.from_redis(fields) == snap
    finally:
        r.close()


def test_dead_redis_is_counted_not_raised() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    pub = Publisher(StatsAccumulator(), lambda: open_store(dead), IDENT, publish_timeout_s=2.0)
    assert not pub.publish_once()
    assert pub.errors_total == 1 and pub.last_error is not None
    pub.stop(final=True)  # the final publish fails too, and is only counted
    assert pub.errors_total == 2
