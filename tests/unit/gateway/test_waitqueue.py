"""WaitQueue: woken in priority order (premium first, then arrival), never by polling
ahead of a better-ranked request, bounded by each request's own deadline, and wakes
coalesce while a woken waiter has not rechecked (head of line, as the replay releases)."""

from __future__ import annotations

import asyncio

from controlplane.gateway.testing import until
from controlplane.gateway.waitqueue import WaitQueue
from controlplane.schemas import Priority


def _queue(poll_s: float) -> WaitQueue:
    return WaitQueue(poll_s=poll_s, clock=asyncio.get_running_loop().time)


async def test_wake_releases_best_priority_then_arrival() -> None:
    q = _queue(poll_s=3600.0)
    deadline = asyncio.get_running_loop().time() + 3600.0
    order: list[str] = []

    async def held(name: str, prio: Priority) -> None:
        await q.wait(q.ticket(prio.rank), deadline)
        order.append(name)

    names = [("batch", Priority.BATCH), ("std1", Priority.STANDARD),
             ("premium", Priority.PREMIUM), ("std2", Priority.STANDARD)]  # fmt: skip
    tasks = []
    for n, p in names:  # tickets in arrival order
        tasks.append(asyncio.create_task(held(n, p)))
        await until(lambda k=len(tasks): len(q) == k, what="queued")  # type: ignore[misc]
    for k in range(4):
        assert q.wake()
        assert q.wake()  # coalesced: the woken one has not rechecked yet
        await until(lambda k=k: len(order) == k + 1 and q.woken == 0, what="woken ran")  # type: ignore[misc]
    await asyncio.gather(*tasks)
    assert order == ["premium", "std1", "std2", "batch"]
    assert not q.wake()


async def test_poll_does_not_jump_ahead_of_better_rank() -> None:
    q = _queue(poll_s=0.01)
    loop = asyncio.get_running_loop()
    released = asyncio.Event()
    polls = 0

    async def premium_held() -> None:  # like the gateway: recheck, still full, wait again
        nonlocal polls
        ticket = q.ticket(Priority.PREMIUM.rank)
        while not released.is_set():
            await q.wait(ticket, loop.time() + 3600.0)
            polls += 1

    premium = asyncio.create_task(premium_held())
    await until(lambda: len(q) == 1, what="premium queued")
    batch = asyncio.create_task(q.wait(q.ticket(Priority.BATCH.rank), loop.time() + 3600.0))
    await until(lambda: polls >= 3, what="premium polled")
    assert not batch.done()  # its polls see premium ahead and wait on
    released.set()
    q.wake()
    await asyncio.wait_for(premium, 30.0)
    await asyncio.wait_for(batch, 30.0)  # now the best: its next poll returns


async def test_lone_waiter_returns_on_poll_to_recheck() -> None:
    q = _queue(poll_s=0.01)
    await asyncio.wait_for(
        q.wait(q.ticket(Priority.STANDARD.rank), asyncio.get_running_loop().time() + 3600.0),
        30.0,
    )
    assert len(q) == 0


async def test_deadline_on_the_queue_clock() -> None:
    """The deadline is on the gateway's clock: a long poll does not hold a request past it,
    and a woken-then-cancelled waiter passes its wake on."""
    now = [100.0]
    q = WaitQueue(poll_s=3600.0, clock=lambda: now[0])
    a = asyncio.create_task(q.wait(q.ticket(Priority.STANDARD.rank), 100.5))
    b = asyncio.create_task(q.wait(q.ticket(Priority.BATCH.rank), 200.0))
    await until(lambda: len(q) == 2, what="both queued")
    assert q.wake()  # wakes a
    a.cancel()  # ... as it resumes: whether it rechecked or left, no wake is lost
    await asyncio.gather(a, return_exceptions=True)
    assert q.woken == 0
    if not b.done():
        assert q.wake()
    await asyncio.wait_for(b, 30.0)
    assert q.woken == 0
