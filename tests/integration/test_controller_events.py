"""The controller's tenant watcher on real Redis: garbage published on the events
channel (not JSON, not an object) is skipped by the store (it never reaches the
watcher) and the watcher stays subscribed, so a tenant change after it still wakes the
controller. (Malformed events that do reach the watcher are counted: unit-tested.)"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from controlplane.controller.app import build_controller, wake_on_tenant_changes
from controlplane.controller.settings import ControllerSettings
from controlplane.state import keys, open_store

C = "ctl-events"
DEADLINE_S = 30.0


async def test_garbage_on_the_events_channel_is_skipped(redis_url: str) -> None:
    store = open_store(redis_url)
    raw = aioredis.from_url(redis_url)
    s = ControllerSettings(
        _env_prefix="SLAPLANE_CTL_IT_UNSET_",  # type: ignore[call-arg]
        redis_url=redis_url, cluster=C, holder="a",
    )  # fmt: skip
    reg = CollectorRegistry()
    ctl = build_controller(s, store, reg)
    task = asyncio.create_task(wake_on_tenant_changes(ctl, store, retry_s=0.05))
    subscribers = 0

    async def numsub() -> int:
        res = await raw.pubsub_numsub(keys.EVENTS_CHANNEL)
        return int(res[0][1]) if res else 0

    def malformed() -> float:
        labels = {"cluster": C, "reason": "malformed"}
        return reg.get_sample_value("slaplane_controller_event_errors_total", labels) or 0.0

    try:
        end = time.monotonic() + DEADLINE_S
        while (subscribers := await numsub()) < 1:
            assert time.monotonic() < end and not task.done()
            await asyncio.sleep(0.02)
        await raw.publish(keys.EVENTS_CHANNEL, '["not", "an", "object"]')
        await raw.publish(keys.EVENTS_CHANNEL, "{not json")
        while not ctl._wake.is_set():
            assert time.monotonic() < end and not task.done()
            await raw.publish(keys.EVENTS_CHANNEL, '{"kind": "tenant", "tenant": "gold"}')
            await asyncio.sleep(0.05)
        assert not task.done() and subscribers >= 1
        assert malformed() == 0  # skipped below the watcher, not counted as its own failure
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await raw.aclose()
        await store.close()
