"""One contract, two stores: every test here runs against MemoryStore and a real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import pytest

from controlplane.policy.request.admission import buckets
from controlplane.schemas import Priority, RateLimit, RequestRecord, TenantSLA, WorkerSnapshot
from controlplane.state import Store, open_store


def snap(worker: str, seq: int = 1, **kw: Any) -> WorkerSnapshot:
    base: dict[str, Any] = dict(
        cluster="c1",
        worker=worker,
        role="prefill",
        model="m",
        url="http://w",
        ts_ms=1000 + seq,
        seq=seq,
        kv_usage=0.25,
        running=3,
        waiting=2,
        ttft_p99_ms=120.5,
        itl_p50_ms=None,
    )
    base.update(kw)
    return WorkerSnapshot(**base)


async def test_snapshot_roundtrip_and_heartbeat(store: Store) -> None:
    s = snap("w1", extra={"foo": 1.5}, up=False, waiting_tokens=None)
    await store.publish_snapshot(s)
    await store.publish_snapshot(snap("w2", role="decode"))
    got = await store.get_snapshots("c1")
    assert got["w1"] == s
    assert got["w2"].role == "decode"
    assert await store.list_workers("c1") == {"w1": 1001, "w2": 1001}
    assert await store.get_snapshots("other") == {}
    await store.remove_worker("c1", "w1")
    assert set(await store.get_snapshots("c1")) == {"w2"}


async def test_telemetry_feed_push_and_block(store: Store) -> None:
    await store.publish_snapshot(snap("w1", seq=1))
    rows = await store.read_telemetry("c1", last_id="0")
    assert [s.seq for _, s in rows] == [1]
    last = rows[-1][0]

    async def later() -> None:
        await asyncio.sleep(0.05)
        await store.publish_snapshot(snap("w1", seq=2))

    task = asyncio.create_task(later())
    t0 = time.monotonic()
    rows = await store.read_telemetry("c1", last_id=last, block_ms=60_000)
    await task
    assert [s.seq for _, s in rows] == [2]
    assert time.monotonic() - t0 < 30.0  # woken by the publish, not by the 60 s block
    assert await store.read_telemetry("c1", last_id=rows[-1][0], block_ms=50) == []


async def test_tenants_keys_and_events(store: Store) -> None:
    events = store.subscribe_events()
    first = asyncio.create_task(anext(events))
    await asyncio.sleep(0.1)  # let the subscription register
    sla = TenantSLA(
        tenant="acme",
        priority=Priority.PREMIUM,
        ttft_ms=500,
        itl_ms=25,
        rate_limit=RateLimit(rpm=60),
        max_concurrency=4,
    )
    await store.put_tenant(sla)
    ev = await asyncio.wait_for(first, 3)
    assert ev == {"kind": "tenant", "tenant": "acme"}
    await events.aclose()
    assert await store.get_tenant("acme") == sla
    assert await store.get_tenant("nope") is None
    assert set(await store.list_tenants()) == {"acme"}
    h = hashlib.sha256(b"sk-test").hexdigest()
    await store.put_api_key(h, "acme")
    assert await store.tenant_for_key(h) == "acme"
    assert await store.delete_api_key(h)
    assert not await store.delete_api_key(h)
    assert await store.tenant_for_key(h) is None
    assert await store.delete_tenant("acme")
    assert not await store.delete_tenant("acme")


async def test_requests_stream(store: Store) -> None:
    recs = [
        RequestRecord(
            request_id=f"r{i}",
            tenant="t",
            model="m",
            arrival_ms=i,
            outcome="ok",
            ttft_ms=10.0 * i,
            predicted_ttft_ms=None,
            sla_met=i % 2 == 0,
        )
        for i in range(5)
    ]
    await store.append_requests("c1", recs)
    rows = await store.read_requests("c1")
    assert [r for _, r in rows] == recs
    assert await store.read_requests("c1", last_id=rows[-1][0]) == []


async def test_control_versions_and_decisions(store: Store) -> None:
    assert await store.get_control("c1") == {}
    assert await store.set_control("c1", {"admit:batch": "0.5"}) == 1
    assert await store.set_control("c1", {"weight:w1": "0"}) == 2
    assert await store.get_control("c1") == {"admit:batch": "0.5", "weight:w1": "0", "version": "2"}
    await store.append_decision("c1", {"kind": "throttle", "tenant": "batch", "reason": "x"})
    rows = await store.read_decisions("c1")
    assert rows[0][1]["kind"] == "throttle"
    await store.append_audit({"who": "op", "what": "tenant acme"})


async def test_leader_lease(store: Store) -> None:
    assert await store.acquire_lease("c1", "a", 200)
    assert not await store.acquire_lease("c1", "b", 200)
    assert await store.acquire_lease("c1", "a", 200)  # renew
    assert await store.lease_holder("c1") == "a"
    assert not await store.release_lease("c1", "b")
    assert await store.release_lease("c1", "a")
    assert await store.acquire_lease("c1", "b", 100)
    await asyncio.sleep(0.25)  # expiry hands it over
    assert await store.lease_holder("c1") is None
    assert await store.acquire_lease("c1", "a", 100)


async def test_token_bucket(store: Store) -> None:
    now = 1_000_000
    # capacity 2 requests, refill 1/s
    assert (await store.take_tokens("c1", "t", "rpm", 1, 2, 1.0, now)).allowed
    assert (await store.take_tokens("c1", "t", "rpm", 1, 2, 1.0, now)).allowed
    r = await store.take_tokens("c1", "t", "rpm", 1, 2, 1.0, now)
    assert not r.allowed and r.retry_after_s == pytest.approx(1.0)
    r = await store.take_tokens("c1", "t", "rpm", 1, 2, 1.0, now + 500)
    assert not r.allowed and r.retry_after_s == pytest.approx(0.5)
    assert (await store.take_tokens("c1", "t", "rpm", 1, 2, 1.0, now + 1000)).allowed
    # other tenants are independent
    assert (await store.take_tokens("c1", "u", "rpm", 1, 2, 1.0, now)).allowed


async def test_token_bucket_matches_reference(store: Store) -> None:
    """The Lua script must be the same arithmetic as buckets.take."""
    tokens: float | None = None
    ts: int | None = None
    now = 5_000
    for i, amount in enumerate([300, 500, 900, 2000, 50, 50, 700, 10]):
        now += 137 * i
        ref, tokens, ts = buckets.take(tokens, ts, amount, 1000, 100.0, now)
        got = await store.take_tokens("c1", "t", "tpm", amount, 1000, 100.0, now)
        assert got.allowed == ref.allowed, i
        assert got.remaining == pytest.approx(ref.remaining), i
        assert got.retry_after_s == pytest.approx(ref.retry_after_s), i


async def test_concurrency_slots(store: Store) -> None:
    now = 10_000
    assert await store.acquire_slot("c1", "t", "a", 2, 1000, now)
    assert await store.acquire_slot("c1", "t", "b", 2, 1000, now)
    assert not await store.acquire_slot("c1", "t", "c", 2, 1000, now)
    assert await store.acquire_slot("c1", "t", "a", 2, 1000, now)  # re-entrant
    await store.release_slot("c1", "t", "a")
    assert await store.acquire_slot("c1", "t", "c", 2, 1000, now)
    # leases expire, so a crashed gateway cannot leak slots forever
    assert await store.acquire_slot("c1", "t", "d", 2, 1000, now + 1500)


def test_open_store_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="memory://"):
        open_store("postgres://x")


async def test_malformed_event_is_skipped_not_fatal(redis_url: str) -> None:
    """A non-JSON or non-object message on the events channel is skipped; the stream goes
    on and the next good event arrives (one bad publisher must not end every watcher)."""
    import asyncio

    import redis.asyncio as aioredis

    from controlplane.state import keys as k

    store = open_store(redis_url)
    raw = aioredis.from_url(redis_url)
    got: list[dict[str, object]] = []

    async def watch() -> None:
        async for ev in store.subscribe_events():
            got.append(ev)
            if ev.get("kind") == "good":
                return

    task = asyncio.create_task(watch())
    try:
        deadline = time.monotonic() + 30.0
        while not got:  # publish until the subscription is live, then the bad ones
            assert time.monotonic() < deadline, "subscription never became live"
            await raw.publish(k.EVENTS_CHANNEL, json.dumps({"kind": "probe"}))
            await asyncio.sleep(0.05)
        for bad in (b"{not json", b"[1, 2]", b"42"):
            await raw.publish(k.EVENTS_CHANNEL, bad)
        await store.publish_event({"kind": "good"})
        await asyncio.wait_for(task, 30.0)
        assert got[-1] == {"kind": "good"} and all(isinstance(e, dict) for e in got)
    finally:
        task.cancel()
        await raw.aclose()
        await store.close()
