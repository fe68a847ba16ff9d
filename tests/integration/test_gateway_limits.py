"""The one-round-trip admit script agrees with the store's separate bucket/slot calls.

Two Limits objects on real Redis, one forced onto the separate-call path, see the
same sequence of requests (rpm, tpm and concurrency limits, clock moving, releases)
on mirrored tenants; every outcome, reason and Retry-After must match.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from controlplane.errors import RateLimited
from controlplane.gateway.limits import Limits, SlotHold
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.schemas import RateLimit, TenantSLA
from controlplane.state import keys, open_store
from controlplane.state.store import Store, StoreUnavailable


@pytest.fixture
async def rstore(redis_url: str) -> AsyncIterator[Store]:
    s = open_store(redis_url)
    yield s
    await s.close()


async def _try(
    lim: Limits, sla: TenantSLA, tenant: str, tokens: int, rid: str
) -> tuple[str, float | None, SlotHold | None]:
    try:
        hold = await lim.admit(sla, tenant, tokens, rid)
    except RateLimited as e:
        return e.code, e.retry_after_s, None
    return "ok", None, hold


async def test_admit_script_matches_separate_calls(
    rstore: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = GatewayMetrics(CollectorRegistry(), "c")
    fast = Limits(rstore, "c", metrics)
    slow = Limits(rstore, "c", metrics)
    assert fast._admit_script is not None
    slow._admit_script = None
    clock = [1_000_000.0]
    monkeypatch.setattr("controlplane.gateway.limits.time.time", lambda: clock[0])
    rng = random.Random(3)
    sla = TenantSLA(tenant="t", rate_limit=RateLimit(rpm=30, tpm=3000), max_concurrency=3)
    held: list[tuple[SlotHold, SlotHold]] = []
    outcomes = set()
    for i in range(200):
        clock[0] += rng.choice([0.0, 0.05, 0.5, 3.0])
        tokens = rng.choice([10, 200, 900])
        a = await _try(fast, sla, "fast", tokens, f"r{i}")
        b = await _try(slow, sla, "slow", tokens, f"r{i}")
        assert a[:2] == b[:2], (i, a, b)
        outcomes.add(a[0])
        if a[2] is not None and b[2] is not None:
            held.append((a[2], b[2]))
        if held and rng.random() < 0.4:
            ha, hb = held.pop(rng.randrange(len(held)))
            await fast.release(ha)
            await slow.release(hb)
    assert {"ok", "rate_limit_rpm", "rate_limit_tpm", "concurrency_limit"} <= outcomes


async def test_no_limits_no_store_call(rstore: Store) -> None:
    lim = Limits(rstore, "c", GatewayMetrics(CollectorRegistry(), "c"))
    assert await lim.admit(TenantSLA(tenant="free"), "free", 100, "r1") is None


# --- a store call whose outcome the gateway never learns (issue 15) ------------------


class RanThenTimedOut:
    """The real store, except that the calls named in ``hang`` run on the server and then
    never answer (the gateway's client-side timeout fires after the script ran), and those
    in ``fail`` raise before reaching the server. ``ran`` is set once a hung call ran."""

    def __init__(self, inner: Store, hang: Iterable[str] = (), fail: Iterable[str] = ()) -> None:
        self.inner, self.hang, self.fail = inner, set(hang), set(fail)
        self.ran = asyncio.Event()
        self.admit_script = self._admit_script

    async def _then_hang(self, result: object) -> object:
        self.ran.set()
        await asyncio.Event().wait()
        return result

    async def _admit_script(self, **kw: Any) -> Any:
        res = await self.inner.admit_script(**kw)  # type: ignore[attr-defined]
        return await self._then_hang(res) if "admit" in self.hang else res

    async def acquire_slot(self, *a: Any) -> bool:
        res = await self.inner.acquire_slot(*a)
        if "acquire_slot" in self.hang:
            await self._then_hang(res)
        return res

    async def release_slot(self, *a: Any, **kw: Any) -> None:
        if "release_slot" in self.fail:
            self.fail.discard("release_slot")  # once: the store is back for the retry
            raise StoreUnavailable("connection reset")
        await self.inner.release_slot(*a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def _slots(url: str, tenant: str) -> list[str]:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return list(await r.zrange(keys.inflight_key("c", tenant), 0, -1))
    finally:
        await r.aclose()


async def _until_no_slots(url: str, tenant: str, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    while await _slots(url, tenant):
        assert loop.time() < deadline, f"slot still leased after 30 s: {what}"
        await asyncio.sleep(0.02)


SLA1 = TenantSLA(tenant="t", max_concurrency=1)


@pytest.mark.parametrize("path", ["admit_script", "separate_calls"])
async def test_acquire_that_ran_then_timed_out_is_released(
    rstore: Store, redis_url: str, path: str
) -> None:
    op = "admit" if path == "admit_script" else "acquire_slot"
    flaky = RanThenTimedOut(rstore, hang={op})
    lim = Limits(cast(Store, flaky), "c", GatewayMetrics(CollectorRegistry(), "c"))
    if path == "separate_calls":
        lim._admit_script = None
    hold = await lim.admit(SLA1, "t", 10, "r1")
    assert flaky.ran.is_set() and hold is not None and hold.local  # failed open, locally
    await _until_no_slots(redis_url, "t", f"{op} timed out after it ran")
    await lim.release(hold)
    # the other replicas see the tenant's one slot free again
    other = Limits(rstore, "c", GatewayMetrics(CollectorRegistry(), "c"))
    h2 = await other.admit(SLA1, "t", 10, "r2")
    assert h2 is not None and not h2.local
    await other.release(h2)
    await lim.close()


async def test_admit_cancelled_after_the_script_ran_is_released(
    rstore: Store, redis_url: str
) -> None:
    flaky = RanThenTimedOut(rstore, hang={"admit"})
    lim = Limits(cast(Store, flaky), "c", GatewayMetrics(CollectorRegistry(), "c"), timeout_s=60)
    task = asyncio.create_task(lim.admit(SLA1, "t", 10, "r1"))
    await flaky.ran.wait()
    assert await _slots(redis_url, "t") == ["r1"]
    task.cancel()  # the client went away while the gateway waited on Redis
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until_no_slots(redis_url, "t", "admit cancelled after the script ran")
    await lim.close()


async def test_failed_release_is_retried(rstore: Store, redis_url: str) -> None:
    flaky = RanThenTimedOut(rstore, fail={"release_slot"})
    lim = Limits(cast(Store, flaky), "c", GatewayMetrics(CollectorRegistry(), "c"))
    hold = await lim.admit(SLA1, "t", 10, "r1")
    assert hold is not None and not hold.local
    await lim.release(hold)  # fails once; the slot must not stay leased for the lease time
    await _until_no_slots(redis_url, "t", "release failed once")
    await lim.close()


async def test_late_acquire_after_its_release_takes_nothing(rstore: Store, redis_url: str) -> None:
    """The release (with tombstone) can reach the server before the timed-out acquire it
    cleans up: that acquire must then take no slot (admit script and separate call)."""
    lim = Limits(rstore, "c", GatewayMetrics(CollectorRegistry(), "c"))
    await rstore.release_slot("c", "t", "r1", forget_ms=60_000)
    with pytest.raises(RateLimited):
        await lim.admit(SLA1, "t", 10, "r1")
    assert not await rstore.acquire_slot("c", "t", "r1", 1, 60_000, int(time.time() * 1000))
    assert await _slots(redis_url, "t") == []
    hold = await lim.admit(SLA1, "t", 10, "r2")  # other ids are unaffected
    assert hold is not None and await _slots(redis_url, "t") == ["r2"]
    await lim.release(hold)
    await lim.release(hold)  # idempotent
    assert await _slots(redis_url, "t") == []
