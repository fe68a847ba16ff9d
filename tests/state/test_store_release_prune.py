"""Issue 15, store side (MemoryStore and real Redis): idempotent slot release with a
tombstone against late acquires, and pruning of workers whose heartbeat is gone."""

from __future__ import annotations

import time

from controlplane.schemas import WorkerSnapshot
from controlplane.state import Store


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_release_is_idempotent(store: Store) -> None:
    now = _now_ms()
    await store.release_slot("c1", "t", "never-acquired")
    assert await store.acquire_slot("c1", "t", "a", 1, 60_000, now)
    await store.release_slot("c1", "t", "a")
    await store.release_slot("c1", "t", "a")
    await store.release_slot("c1", "t", "a", forget_ms=60_000)
    assert await store.acquire_slot("c1", "t", "b", 1, 60_000, now)  # exactly one freed


async def test_tombstoned_id_takes_no_slot(store: Store) -> None:
    now = _now_ms()
    await store.release_slot("c1", "t", "late", forget_ms=60_000)
    # the acquire the release was cleaning up runs afterwards: it takes nothing
    assert not await store.acquire_slot("c1", "t", "late", 1, 60_000, now)
    assert await store.acquire_slot("c1", "t", "other", 1, 60_000, now)
    assert not await store.acquire_slot("c1", "t", "third", 1, 60_000, now)
    # the tombstone is per tenant and ends
    assert await store.acquire_slot("c1", "u", "late", 1, 60_000, now)
    assert await store.acquire_slot("c1", "t", "late", 2, 60_000, now + 120_000)


def _snap(worker: str, age_s: float) -> WorkerSnapshot:
    ts = int((time.time() - age_s) * 1000)
    return WorkerSnapshot("c1", worker, "decode", "m", url=f"http://{worker}", ts_ms=ts)


async def test_get_snapshots_prunes_workers_past_their_ttl(store: Store) -> None:
    await store.publish_snapshot(_snap("live", 1.0))
    await store.publish_snapshot(_snap("dead", 120.0))
    assert set(await store.get_snapshots("c1")) == {"live", "dead"}  # no TTL: all, kept
    assert set(await store.get_snapshots("c1", max_age_ms=60_000)) == {"live"}
    assert set(await store.list_workers("c1")) == {"live"}  # gone from the heartbeat set
    assert set(await store.get_snapshots("c1")) == {"live"}  # and its hash
    await store.publish_snapshot(_snap("dead", 0.5))  # back when it publishes again
    assert set(await store.get_snapshots("c1", max_age_ms=60_000)) == {"live", "dead"}
