"""The agent against a real Redis and a real HTTP page server whose page changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from controlplane.schemas import WorkerSnapshot
from controlplane.state import open_store
from controlplane.state.store import Store
from tests.conftest import RedisServer, free_port
from workers.agent.fakepage import PageValues, render
from workers.agent.loop import Agent, serve_metrics
from workers.agent.runner import build_agent
from workers.agent.settings import AgentSettings


@dataclass
class PageServer:
    """An aiohttp /metrics server standing in for a vLLM worker; ``page`` can be swapped."""

    port: int
    page: str
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(text=self.page, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def worker() -> AsyncIterator[PageServer]:
    srv = PageServer(free_port(), render(PageValues()))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[Store]:
    s = open_store(redis_url)
    yield s
    await s.close()


async def _wait_for(
    store: Store, pred: Callable[[WorkerSnapshot], bool], timeout_s: float, cluster: str = "it"
) -> tuple[WorkerSnapshot, float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        snap = (await store.get_snapshots(cluster)).get("w1")
        if snap is not None and pred(snap):
            return snap, time.monotonic() - t0
        await asyncio.sleep(0.01)
    raise AssertionError(f"no matching snapshot within {timeout_s}s")


def _settings(url: str, redis_url: str, **kw: object) -> AgentSettings:
    return AgentSettings(
        worker_url=url,
        redis_url=redis_url,
        cluster="it",
        worker_id="w1",
        role="decode",
        interval_ms=100,
        **kw,  # type: ignore[arg-type]
    )


async def _start(agent: Agent) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(agent.run(stop))


async def test_page_changes_reach_redis_and_dead_worker_is_down(
    worker: PageServer, redis_store: Store, redis_url: str
) -> None:
    agent = build_agent(_settings(worker.url, redis_url), store=redis_store)
    stop, task = await _start(agent)
    try:
        # how fast a change reaches Redis is measured in benchmarks/bench_telemetry_freshness.py;
        # here only that it does (generous deadlines: a loaded CI host is slow, not wrong)
        first, _ = await _wait_for(redis_store, lambda s: s.up, 20.0)
        assert first.model == "tiny-llama" and first.role == "decode" and first.waiting == 0

        worker.page = render(PageValues(running=3, waiting=5, kv_usage=0.4))
        snap, _ = await _wait_for(redis_store, lambda s: s.waiting == 5, 20.0)
        assert snap.running == 3 and snap.kv_usage == 0.4

        await worker.stop()
        down, _ = await _wait_for(redis_store, lambda s: not s.up, 20.0)
        assert down.waiting == 5  # last values kept
        hb1 = (await redis_store.list_workers("it"))["w1"]
        deadline = time.monotonic() + 30.0  # still heartbeating while down
        while (await redis_store.list_workers("it"))["w1"] <= hb1:
            assert time.monotonic() < deadline, "no heartbeat while down"
            await asyncio.sleep(0.05)

        # the telemetry stream has every snapshot, in order (while down, one per interval)
        while True:
            rows = await redis_store.read_telemetry("it", last_id="0", count=10_000)
            seqs = [s.seq for _, s in rows]
            if len(seqs) >= 5 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert seqs == sorted(seqs) and len(seqs) >= 5

        await worker.start()
        back, _ = await _wait_for(redis_store, lambda s: s.up, 20.0)
        assert back.seq > down.seq
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_metrics_port_reexports_snapshot(
    worker: PageServer, redis_store: Store, redis_url: str
) -> None:
    registry = CollectorRegistry()
    settings = _settings(worker.url, redis_url)
    agent = build_agent(settings, store=redis_store, registry=registry)
    port = free_port()
    runner = await serve_metrics(registry, port, "127.0.0.1")
    worker.page = render(PageValues(running=2, waiting=1, kv_usage=0.5, ttft_s=[0.03] * 4))
    stop, task = await _start(agent)
    try:
        await _wait_for(redis_store, lambda s: s.waiting == 1, 20.0)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            body = await resp.text()
        labels = 'cluster="it",model="tiny-llama",role="decode",worker="w1"'
        assert f"slaplane_worker_up{{{labels}}} 1.0" in body
        assert f"slaplane_worker_requests_waiting{{{labels}}} 1.0" in body
        assert f"slaplane_worker_kv_cache_usage_ratio{{{labels}}} 0.5" in body
        assert "slaplane_worker_telemetry_age_seconds{" in body
        assert 'slaplane_agent_scrapes_total{cluster="it",result="ok",worker="w1"}' in body
        assert "process_cpu_seconds_total" in body
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await runner.cleanup()


async def test_redis_outage_keeps_scraping_and_recovers(
    worker: PageServer, redis_url: str, request: pytest.FixtureRequest
) -> None:
    import os

    if os.environ.get("SLAPLANE_REDIS_URL"):
        pytest.skip("needs the private redis-server it can stop")
    server: RedisServer = request.getfixturevalue("redis_server")
    store = open_store(redis_url)
    registry = CollectorRegistry()
    agent = build_agent(_settings(worker.url, redis_url), store=store, registry=registry)
    stop, task = await _start(agent)
    lab = {"cluster": "it", "worker": "w1"}
    try:
        await _wait_for(store, lambda s: s.up, 20.0)
        server.stop()
        scrapes = agent.scrapes
        await asyncio.sleep(1.0)
        assert agent.scrapes >= scrapes + 5  # scraping went on
        assert not task.done()
        assert (registry.get_sample_value("slaplane_agent_publish_errors_total", lab) or 0) >= 1
        server.start()  # same port, empty database
        worker.page = render(PageValues(waiting=9))
        snap, _ = await _wait_for(store, lambda s: s.waiting == 9, 20.0)
        assert snap.up
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await store.close()
        if server.proc is None:
            server.start()
