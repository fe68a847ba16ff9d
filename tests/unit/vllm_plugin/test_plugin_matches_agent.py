"""One counter sequence through both telemetry sources gives identical snapshots.

The same vLLM ``record(scheduler_stats, iteration_stats)`` calls feed (a) a stand-in for
vLLM's Prometheus logger, whose /metrics page the agent scrapes and derives, and (b) the
plugin's accumulator, whose totals the plugin's publisher derives and publishes. At each
checkpoint the two snapshots must be equal field by field, except ``source``/``worker``.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from controlplane.schemas import WorkerSnapshot
from tests.unit.vllm_plugin.vllm_metrics import Clock, PageSource, VllmMetrics, random_stats
from workers.agent.loop import Agent
from workers.telemetry.derive import DeriveConfig, Identity
from workers.vllm_plugin.accumulator import StatsAccumulator, step_from_stats
from workers.vllm_plugin.publisher import Publisher

MODEL = "tiny-llama"
AGENT = Identity(cluster="c", worker="d0", role="decode", url="http://d0:8000")
PLUGIN = replace(AGENT, worker="d0-plugin", model=MODEL, source="plugin")


class ListStore:
    def __init__(self) -> None:
        self.snaps: list[WorkerSnapshot] = []

    async def publish_snapshot(self, snap: WorkerSnapshot) -> None:
        self.snaps.append(snap)

    async def close(self) -> None:
        return None


def _schedule() -> list[tuple[float, int]]:
    """(seconds to advance, steps before the next checkpoint): busy ticks, idle ticks
    (quantiles fall back to the window), a gap past the 5 s window (back to None)."""
    busy = [(0.25, 7)] * 8
    idle = [(0.25, 0)] * 3
    return [(0.0, 5), *busy, *idle, (6.0, 0), (0.25, 0), *busy, (0.5, 1), (1.0, 30), *idle]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_counters_give_the_same_snapshot(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    vllm = VllmMetrics(MODEL)
    agent = Agent(PageSource(vllm), None, AGENT, clock=clock.wall_s, mono=clock.mono)
    acc = StatsAccumulator(kv_capacity_tokens=1024 * 128)
    store = ListStore()
    pub = Publisher(
        acc, lambda: store, PLUGIN, derive_config=DeriveConfig(), monotonic=clock.mono,
        wall_ms=clock.wall_ms,
    )  # fmt: skip
    seen = {"quantiles": 0, "no_quantiles": 0, "fallback": 0, "ext_rate": 0}
    try:
        for advance_s, steps in _schedule():
            clock.t += advance_s
            for _ in range(steps):
                sched, it = random_stats(rng)
                vllm.record(sched, it)  # what vLLM's own logger does with the call
                acc.observe(step_from_stats(sched, it))  # what the plugin does with it
            scraped = asyncio.run(agent.step())
            assert pub.publish_once(), pub.last_error
            published = store.snaps[-1]
            assert scraped is not None and scraped.source == "agent"
            assert published.source == "plugin" and published.worker == "d0-plugin"
            assert replace(published, source="agent", worker="d0") == scraped
            seen["quantiles"] += scraped.itl_p50_ms is not None
            seen["no_quantiles"] += scraped.itl_p50_ms is None
            seen["fallback"] += steps == 0 and scraped.itl_p50_ms is not None
            seen["ext_rate"] += "external_prefix_hit_rate" in scraped.extra
    finally:
        pub.stop(final=False)
    # the sequence went through every branch of the derivation
    assert all(seen.values()), seen
    last = store.snaps[-1]
    assert last.requests_finished_total > 0 and last.prompt_tokens_total > 0
    assert last.kv_capacity_tokens == 1024 * 128 and last.model == MODEL
    assert {"prompt_tokens_external_total", "preemptions_total", "waiting_deferred"} <= set(
        last.extra
    )
