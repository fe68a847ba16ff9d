"""Agent.step/run with fake page sources and stores: no sockets, no Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from controlplane.schemas import WorkerSnapshot
from controlplane.state.memory import MemoryStore
from controlplane.state.store import StoreUnavailable
from workers.agent.fakepage import PageValues, render
from workers.agent.loop import Agent
from workers.agent.metrics import AgentMetrics
from workers.agent.scrape import ScrapeError
from workers.telemetry.derive import Identity

IDENT = Identity(cluster="c1", worker="w1", role="prefill", url="http://w1")
LAB = {"cluster": "c1", "worker": "w1"}


class ScriptedSource:
    """Returns the scripted pages/errors in order, then repeats the last one."""

    def __init__(self, items: Sequence[str | Exception]) -> None:
        self.items = list(items)
        self.i = 0
        self.closed = False

    async def fetch(self) -> str:
        item = self.items[min(self.i, len(self.items) - 1)]
        self.i += 1
        if isinstance(item, Exception):
            raise item
        return item

    async def close(self) -> None:
        self.closed = True


class BrokenStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True
        self.calls = 0

    async def publish_snapshot(self, snap: WorkerSnapshot) -> None:
        self.calls += 1
        if self.fail:
            raise StoreUnavailable("connection refused")
        await super().publish_snapshot(snap)


def _agent(
    items: Sequence[str | Exception], store: MemoryStore | None = None
) -> tuple[Agent, CollectorRegistry]:
    reg = CollectorRegistry()
    agent = Agent(
        ScriptedSource(items), store, IDENT, interval_s=0.02, metrics=AgentMetrics(reg, "c1", "w1")
    )
    return agent, reg


async def test_worker_stops_answering_is_published_down_with_last_values() -> None:
    store = MemoryStore()
    agent, reg = _agent([render(PageValues(waiting=4)), ScrapeError("timeout", "no answer")], store)
    ok = await agent.step()
    assert ok is not None
    await agent.publish(ok)
    assert await agent.step() is None  # one failure: skipped, not yet down
    down = await agent.step()
    assert down is not None
    await agent.publish(down)
    assert ok.up and not down.up and down.waiting == 4 and down.seq == ok.seq + 1
    stored = (await store.get_snapshots("c1"))["w1"]
    assert not stored.up and stored.waiting == 4
    assert (await store.list_workers("c1"))["w1"] == down.ts_ms
    assert reg.get_sample_value("slaplane_agent_scrapes_total", {**LAB, "result": "timeout"}) == 2


async def test_single_failure_does_not_flap_to_down() -> None:
    page = render(PageValues(waiting=1))
    agent, _ = _agent([page, ScrapeError("timeout", "slow"), page, ScrapeError("timeout", "x")])
    results = [await agent.step() for _ in range(4)]
    assert [r is not None and r.up for r in results] == [True, False, True, False]
    assert results[1] is None and results[3] is None


async def test_malformed_page_is_counted_not_raised() -> None:
    agent, reg = _agent(["vllm:num_requests_running{oops 1\n", "<html>not metrics</html>"])
    agent.down_after_failures = 1
    s1 = await agent.step()
    s2 = await agent.step()
    assert s1 is not None and s2 is not None
    assert not s1.up and not s2.up
    assert reg.get_sample_value("slaplane_agent_parse_errors_total", LAB) == 2
    assert (
        reg.get_sample_value("slaplane_agent_scrapes_total", {**LAB, "result": "parse_error"}) == 2
    )


async def test_store_down_never_stops_scraping_and_recovers() -> None:
    store = BrokenStore()
    agent, reg = _agent([render(PageValues(running=1))], store)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(0.15)
    assert agent.scrapes >= 3
    assert (reg.get_sample_value("slaplane_agent_publish_errors_total", LAB) or 0) >= 1
    assert await store.get_snapshots("c1") == {}
    store.fail = False
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 2)
    snaps = await store.get_snapshots("c1")
    assert snaps["w1"].running == 1 and snaps["w1"].up
    assert agent.source.closed  # type: ignore[attr-defined]


async def test_run_keeps_cadence_and_sequence() -> None:
    store = MemoryStore()
    agent, _ = _agent([render(PageValues())], store)
    seen: list[WorkerSnapshot] = []
    agent.on_snapshot = seen.append
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert 6 <= len(seen) <= 12  # 20 ms grid over ~200 ms
    assert [s.seq for s in seen] == list(range(1, len(seen) + 1))
    assert (await store.get_snapshots("c1"))["w1"].seq == seen[-1].seq


@pytest.mark.parametrize("exc", [ScrapeError("error", "refused"), ScrapeError("http", "503")])
async def test_collector_sees_down_worker(exc: ScrapeError) -> None:
    from workers.agent.collector import SnapshotCollector

    agent, reg = _agent([render(PageValues(running=2)), exc])
    agent.down_after_failures = 1
    reg.register(SnapshotCollector(agent.latest, agent.last_ok_s, lambda: 1e12))
    await agent.step()
    lab = {**LAB, "role": "prefill", "model": "tiny-llama"}
    assert reg.get_sample_value("slaplane_worker_up", lab) == 1.0
    await agent.step()
    assert reg.get_sample_value("slaplane_worker_up", lab) == 0.0
    assert reg.get_sample_value("slaplane_worker_requests_running", lab) == 2.0


async def test_nan_gauge_neither_kills_the_agent_nor_reaches_the_store() -> None:
    """A NaN/Inf gauge or counter on the page is treated as missing and counted; the run
    loop keeps going and the stored snapshot holds only finite numbers."""
    good = render(PageValues(running=2, waiting=1, kv_usage=0.5, prompt_tokens=10))
    nan = (
        good.replace('vllm:num_requests_running{engine="0",model_name="tiny-llama"} 2.0',
                     'vllm:num_requests_running{engine="0",model_name="tiny-llama"} NaN')
        .replace('vllm:kv_cache_usage_perc{engine="0",model_name="tiny-llama"} 0.5',
                 'vllm:kv_cache_usage_perc{engine="0",model_name="tiny-llama"} +Inf')
        .replace('vllm:prompt_tokens_total{engine="0",model_name="tiny-llama"} 10.0',
                 'vllm:prompt_tokens_total{engine="0",model_name="tiny-llama"} NaN')
    )  # fmt: skip
    assert nan.count("NaN") == 2 and "+Inf\n" in nan
    store = MemoryStore()
    agent, reg = _agent([nan, good, nan], store)
    seen: list[WorkerSnapshot] = []
    agent.on_snapshot = seen.append
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    loop = asyncio.get_running_loop()
    end = loop.time() + 30.0
    try:
        while len(seen) < 5:
            assert not task.done(), task.exception()
            assert loop.time() < end
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert all(s.up for s in seen)
    assert seen[0].running == 0 and seen[0].kv_usage == 0.0 and seen[0].waiting == 1
    assert seen[1].running == 2 and seen[1].kv_usage == 0.5
    stored = (await store.get_snapshots("c1"))["w1"]
    values = list(stored.to_redis().values())
    assert not any("nan" in v.lower() or "inf" in v.lower() for v in values), values
    assert (reg.get_sample_value("slaplane_agent_nonfinite_values_total", LAB) or 0) >= 6


async def test_unexpected_error_in_a_step_is_counted_and_the_loop_goes_on() -> None:
    class Boom(Exception):
        pass

    agent, reg = _agent([Boom("unexpected"), render(PageValues(running=3))])
    agent.down_after_failures = 1
    first = await agent.step()
    assert first is not None and not first.up
    second = await agent.step()
    assert second is not None and second.up and second.running == 3
    assert reg.get_sample_value("slaplane_agent_scrapes_total", {**LAB, "result": "internal"}) == 1
