"""The local actuator really starts and stops ``slaplane sim-worker`` processes with
their agents; the agent's snapshots reach Redis, and a stopped worker is gone."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from controlplane.controller.actuators.local import LocalActuator, LocalParams
from controlplane.policy.planner.types import ScaleDecision
from controlplane.state import open_store

C = "ctl-local"

pytestmark = pytest.mark.slow


async def healthy(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(url + "/health", timeout=aiohttp.ClientTimeout(total=1)) as r,
        ):
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def test_local_actuator_runs_sim_workers_and_agents(redis_url: str, tmp_path: object) -> None:
    store = open_store(redis_url)
    act = LocalActuator(LocalParams(cluster=C, redis_url=redis_url, log_dir=str(tmp_path)))
    try:
        res = await act.apply(ScaleDecision({"prefill": 1, "decode": 1}, {}))
        assert res.ok and res.applied == {"prefill": 1, "decode": 1}
        ports = act.ports()
        deadline = time.monotonic() + 30
        snaps: dict[str, object] = {}
        while time.monotonic() < deadline:
            snaps = await store.get_snapshots(C)
            if {"local-prefill-1", "local-decode-1"} <= set(snaps):
                break
            await asyncio.sleep(0.2)
        assert {"local-prefill-1", "local-decode-1"} <= set(snaps), "agents never published"
        url = f"http://127.0.0.1:{ports['local-prefill-1']}"
        assert await healthy(url)
        res = await act.apply(
            ScaleDecision({"prefill": 0, "decode": 1}, {}, {"prefill": ("local-prefill-1",)})
        )
        assert res.removed == ("local-prefill-1",)
        assert not await healthy(url)
        assert await act.current_replicas() == {"prefill": 0, "decode": 1}
    finally:
        await act.close()
        await store.close()
    assert await act.current_replicas() == {"prefill": 0, "decode": 0}
