"""The controller's tenant-change watcher: a malformed event is logged, counted and
skipped; the watcher keeps running and still wakes the controller."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry

from controlplane.controller.app import wake_on_tenant_changes
from controlplane.controller.leader import LeaderElector
from controlplane.controller.loop import Controller
from controlplane.controller.metrics import ControllerMetrics
from controlplane.state.memory import MemoryStore
from tests.unit.controller.builders import planner
from tests.unit.controller.fakes import RecordingActuator

C = "c1"
DEADLINE_S = 30.0


class GarbageEvents(MemoryStore):
    """First subscription: a non-object event, an object with an odd ``kind``, then the
    JSON decode error the Redis store raises on a non-JSON message (which ends that
    subscription). Later subscriptions: a tenant notice, then nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.subscriptions = 0

    async def subscribe_events(self) -> AsyncIterator[dict[str, Any]]:  # type: ignore[override]
        self.subscriptions += 1
        if self.subscriptions == 1:
            yield ["not", "an", "object"]  # type: ignore[misc]
            yield {"kind": ["unhashable"]}
            json.loads("{not json")
        yield {"kind": "tenant", "tenant": "gold"}
        await asyncio.Event().wait()


async def test_malformed_events_are_counted_and_skipped() -> None:
    store = GarbageEvents()
    reg = CollectorRegistry()
    ctl = Controller(
        store, C, planner(), RecordingActuator(), ControllerMetrics(reg, C),
        LeaderElector(store, C, "a", 3000),
    )  # fmt: skip
    task = asyncio.create_task(wake_on_tenant_changes(ctl, store))
    try:
        await asyncio.wait(
            [task, asyncio.ensure_future(ctl._wake.wait())],
            timeout=DEADLINE_S, return_when=asyncio.FIRST_COMPLETED,
        )  # fmt: skip
        assert not task.done(), task.exception()
        assert ctl._wake.is_set()
        assert store.subscriptions == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()

    def count(reason: str) -> float | None:
        return reg.get_sample_value(
            "slaplane_controller_event_errors_total", {"cluster": C, "reason": reason}
        )

    assert count("malformed") == 3 and count("error") == 0
