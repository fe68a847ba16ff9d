"""The vLLM plugin's publisher against a real Redis, beside the agent (no vLLM needed).

Both sources are fed the same vLLM stat calls (the agent through a stand-in for vLLM's
/metrics page); both publish through ``controlplane.state`` stores, and what lands in
Redis must agree except for ``source``/``worker``. The plugin's thread rides out a Redis
outage without blocking the engine side, and catches up with the newest totals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from dataclasses import replace

import pytest

from controlplane.gateway.testing import until
from controlplane.state import open_store
from tests.conftest import RedisServer
from tests.unit.vllm_plugin.vllm_metrics import Clock, PageSource, VllmMetrics, random_stats
from workers.agent.loop import Agent
from workers.telemetry.derive import Identity
from workers.vllm_plugin.accumulator import StatsAccumulator, StepSample, step_from_stats
from workers.vllm_plugin.publisher import Publisher

DEADLINE_S = 30.0


MODEL = "tiny-llama"
AGENT = Identity(cluster="c", worker="d0", role="decode", url="http://d0:8000")
PLUGIN = replace(AGENT, worker="d0-plugin", model=MODEL, source="plugin")


async def test_plugin_and_agent_land_the_same_snapshot_in_redis(redis_url: str) -> None:
    rng = random.Random(7)
    clock = Clock()
    vllm = VllmMetrics(MODEL)
    store = open_store(redis_url)
    agent = Agent(PageSource(vllm), store, AGENT, clock=clock.wall_s, mono=clock.mono)
    acc = StatsAccumulator(kv_capacity_tokens=1024 * 128)
    pub = Publisher(
        acc, lambda: open_store(redis_url), PLUGIN, monotonic=clock.mono, wall_ms=clock.wall_ms
    )
    try:
        for _ in range(6):
            clock.t += 0.25
            for _ in range(9):
                sched, it = random_stats(rng)
                vllm.record(sched, it)
                acc.observe(step_from_stats(sched, it))
            snap = await agent.step()
            assert snap is not None and await agent.publish(snap)
            # the plugin's store lives on the publisher's own loop: drive it off this one
            assert await asyncio.to_thread(pub.publish_once), pub.last_error
        got = await store.get_snapshots(AGENT.cluster)
        assert set(got) == {"d0", "d0-plugin"}
        assert got["d0-plugin"].source == "plugin" and got["d0-plugin"].seq == 6
        assert replace(got["d0-plugin"], source="agent", worker="d0") == got["d0"]
        rows = await store.read_telemetry(AGENT.cluster, last_id="0", count=100)
        by_worker = [s.worker for _, s in rows]
        assert by_worker.count("d0") == by_worker.count("d0-plugin") == 6
    finally:
        await asyncio.to_thread(pub.stop, final=False)
        await store.close()


async def test_plugin_thread_rides_out_a_redis_outage(
    redis_url: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    if os.environ.get("SLAPLANE_REDIS_URL"):
        pytest.skip("needs the private redis-server it can stop")
    server: RedisServer = request.getfixturevalue("redis_server")
    ident = Identity(cluster="po", worker="p1", role="decode", model="m", source="plugin")
    reader = open_store(redis_url)
    pub = Publisher(
        StatsAccumulator(),
        lambda: open_store(redis_url),
        ident,
        interval_s=0.02,
        heartbeat_s=0.05,
        publish_timeout_s=1.0,
        max_backoff_s=0.2,
    )
    caplog.set_level(logging.INFO, logger="vllm.slaplane_plugin")
    pub.start()
    try:
        pub.acc.observe(StepSample(generation_tokens=1))
        pub.notify()
        await until(lambda: pub.published_total >= 1, DEADLINE_S, "a first publish")
        server.stop()
        published = pub.published_total
        steps = 1
        end = time.monotonic() + DEADLINE_S
        while pub.errors_total < 3:  # the engine keeps stepping through the outage
            assert time.monotonic() < end, "no failed publish while Redis is down"
            pub.acc.observe(StepSample(generation_tokens=1))
            pub.notify()
            steps += 1
            await asyncio.sleep(0.005)
        server.start()  # same port, empty database

        async def caught_up() -> bool:
            try:
                s = (await reader.get_snapshots("po")).get("p1")
            except Exception:  # the reader's own reconnect
                return False
            return s is not None and s.generation_tokens_total == steps

        end = time.monotonic() + DEADLINE_S
        while not await caught_up():
            assert time.monotonic() < end, "publishing did not resume"
            await asyncio.sleep(0.02)
        assert pub.published_total > published and pub.failing_for == 0
    finally:
        await asyncio.to_thread(pub.stop, final=False)
        await reader.close()
        if server.proc is None:
            server.start()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per outage
    assert any("publishing again" in r.getMessage() for r in caplog.records)
