"""A cancel that redis-py swallows at a read-timeout boundary (redis/redis-py#2028,
#2551) must still stop the task: ``RedisStore._call`` delivers it. The swallowing
client call is stood in by an awaitable that does exactly what the library does
in that race (catches the CancelledError and returns a reply)."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.state.redis_store import RedisStore


async def _swallows_cancel(started: asyncio.Event) -> str:
    started.set()
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return "OK"  # the library's race: the reply wins, the cancel is lost
    return "late"


async def test_call_delivers_a_cancel_the_client_swallowed(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    started = asyncio.Event()
    try:
        task = asyncio.create_task(store._call(_swallows_cancel(started)))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)
        assert task.cancelled()
    finally:
        await store.close()


async def test_cleanup_after_a_delivered_cancel_still_reaches_redis(redis_url: str) -> None:
    """Only a cancel made *during* the call is re-raised: a ``finally`` block that
    runs after a delivered cancel can still write (e.g. release a lease)."""
    store = RedisStore.from_url(redis_url)
    wrote = asyncio.Event()

    async def worker() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await store.acquire_lease("cancel-it", "a", 5000)
            assert await store.lease_holder("cancel-it") == "a"
            await store.release_lease("cancel-it", "a")
            wrote.set()

    try:
        task = asyncio.create_task(worker())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert wrote.is_set()
    finally:
        await store.close()
