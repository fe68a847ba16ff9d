"""The publisher thread: rate limit, heartbeat, failure counting; the Redis sink layout."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from controlplane.schemas import WorkerSnapshot
from controlplane.state import keys
from workers.vllm_plugin.accumulator import Identity, StepSample, TelemetryAccumulator
from workers.vllm_plugin.publisher import Publisher, RedisSnapshotSink

IDENT = Identity(cluster="pc", worker="pw", role="prefill", model="m")


class ListSink:
    def __init__(self, fail: bool = False) -> None:
        self.snaps: list[WorkerSnapshot] = []
        self.fail = fail
        self.closed = False
        self.lock = threading.Lock()

    def publish(self, snap: WorkerSnapshot) -> None:
        if self.fail:
            raise ConnectionError("down")
        with self.lock:
            self.snaps.append(snap)

    def close(self) -> None:
        self.closed = True


def test_rate_limited_while_busy() -> None:
    acc = TelemetryAccumulator(IDENT)
    sink = ListSink()
    pub = Publisher(acc, sink, interval_s=0.1, heartbeat_s=10.0)
    pub.start()
    t_end = time.monotonic() + 0.55
    while time.monotonic() < t_end:
        acc.observe(StepSample(at_s=time.monotonic(), generation_tokens=1))
        pub.notify()
        time.sleep(0.002)
    pub.stop(final=True)
    n = len(sink.snaps)
    assert 3 <= n <= 8, n  # ~5 publishes + the final one, not one per step
    assert not sink.snaps[-1].up and sink.closed
    assert [s.seq for s in sink.snaps] == sorted(s.seq for s in sink.snaps)


def test_heartbeat_when_idle() -> None:
    sink = ListSink()
    pub = Publisher(TelemetryAccumulator(IDENT), sink, interval_s=0.01, heartbeat_s=0.05)
    pub.start()
    time.sleep(0.3)
    pub.stop(final=False)
    assert len(sink.snaps) >= 3


def test_failures_are_counted_not_raised() -> None:
    pub = Publisher(TelemetryAccumulator(IDENT), ListSink(fail=True), interval_s=0.01)
    assert pub.publish_once() is False
    assert pub.errors_total == 1 and pub.last_error == "ConnectionError: down"
    pub.start()
    pub.notify()
    time.sleep(0.1)
    pub.stop(final=True)
    assert pub.errors_total >= 2


def test_redis_sink_uses_store_layout(redis_url: str) -> None:
    acc = TelemetryAccumulator(IDENT)
    acc.observe(StepSample(at_s=0.0, running=2, prompt_tokens=7, ttfts_s=(0.05,)))
    snap = acc.snapshot(0.1, 1234, extra={"x": 1.0})
    sink = RedisSnapshotSink(redis_url)
    sink.publish(snap)
    sink.close()
    r: Any = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        got = WorkerSnapshot.from_redis(r.hgetall(keys.worker_hash("pc", "pw")))
        assert got == snap
        assert r.zscore(keys.workers_zset("pc"), "pw") == 1234
        ((_, fields),) = r.xrange(keys.telemetry_stream("pc"))
        assert WorkerSnapshot.from_redis(fields) == snap
    finally:
        r.close()
