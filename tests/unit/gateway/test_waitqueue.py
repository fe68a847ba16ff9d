"""WaitQueue: woken in priority order (premium first, then arrival), never by polling
ahead of a better-ranked request, and bounded by each request's own deadline."""

from __future__ import annotations

import asyncio

from controlplane.gateway.waitqueue import WaitQueue
from controlplane.schemas import Priority


async def test_wake_releases_best_priority_then_arrival() -> None:
    q = WaitQueue(poll_s=10.0)
    order: list[str] = []

    async def held(name: str, prio: Priority) -> None:
        await q.wait(q.ticket(prio.rank), 5.0)
        order.append(name)

    tasks = [
        asyncio.create_task(held(n, p))
        for n, p in [
            ("batch", Priority.BATCH),
            ("std1", Priority.STANDARD),
            ("premium", Priority.PREMIUM),
            ("std2", Priority.STANDARD),
        ]
    ]
    await asyncio.sleep(0.01)
    assert len(q) == 4
    for _ in range(4):
        assert q.wake()
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert order == ["premium", "std1", "std2", "batch"]
    assert not q.wake()


async def test_poll_does_not_jump_ahead_of_better_rank() -> None:
    q = WaitQueue(poll_s=0.01)
    loop = asyncio.get_running_loop()
    released = asyncio.Event()

    async def premium_held() -> None:  # like the gateway: recheck, still full, wait again
        ticket = q.ticket(Priority.PREMIUM.rank)
        while not released.is_set():
            await q.wait(ticket, 5.0)

    premium = asyncio.create_task(premium_held())
    await asyncio.sleep(0)
    t0 = loop.time()
    await q.wait(q.ticket(Priority.BATCH.rank), 0.1)  # polls, sees premium, waits on
    assert loop.time() - t0 >= 0.09
    assert not premium.done()
    released.set()
    q.wake()
    await asyncio.wait_for(premium, 1.0)


async def test_lone_waiter_returns_on_poll_to_recheck() -> None:
    q = WaitQueue(poll_s=0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await q.wait(q.ticket(Priority.STANDARD.rank), 5.0)
    assert loop.time() - t0 < 1.0  # rechecks admission at the next poll
    assert len(q) == 0
