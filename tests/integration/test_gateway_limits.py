"""The one-round-trip admit script agrees with the store's separate bucket/slot calls.

Two Limits objects on real Redis, one forced onto the separate-call path, see the
same sequence of requests (rpm, tpm and concurrency limits, clock moving, releases)
on mirrored tenants; every outcome, reason and Retry-After must match.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from controlplane.errors import RateLimited
from controlplane.gateway.limits import Limits, SlotHold
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.schemas import RateLimit, TenantSLA
from controlplane.state import open_store
from controlplane.state.store import Store


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
