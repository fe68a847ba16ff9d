"""Leader election: one holder at a time, renewal, takeover after expiry, outage."""

from __future__ import annotations

import asyncio

from controlplane.controller.leader import LeaderElector
from controlplane.state.memory import MemoryStore
from tests.unit.controller.fakes import FlakyStore


async def test_one_leader_and_takeover_after_the_lease() -> None:
    store = MemoryStore()
    a = LeaderElector(store, "c", "a", ttl_ms=200)
    b = LeaderElector(store, "c", "b", ttl_ms=200)
    assert await a.renew() and a.is_leader()
    assert not await b.renew() and not b.is_leader()
    assert await a.renew()  # renewal by the holder
    await asyncio.sleep(0.25)  # a stops renewing (dies)
    assert not a.is_leader()  # its own view expires first (safety margin)
    assert await b.renew() and b.is_leader()
    assert not await a.renew()


async def test_leadership_is_trusted_only_within_the_safety_margin() -> None:
    t = [0.0]
    e = LeaderElector(MemoryStore(), "c", "a", ttl_ms=1000, safety=0.8, clock=lambda: t[0])
    assert await e.renew()
    t[0] = 0.79
    assert e.is_leader()
    t[0] = 0.81
    assert not e.is_leader()


async def test_store_outage_drops_leadership() -> None:
    store = FlakyStore()
    e = LeaderElector(store, "c", "a", ttl_ms=5000)
    assert await e.renew() and e.store_up
    store.down = True
    assert not await e.renew() and not e.store_up and not e.is_leader()
    await e.release()  # does not raise during an outage
    assert e.transitions == 2
