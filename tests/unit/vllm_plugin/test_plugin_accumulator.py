"""Pure parts of the plugin: vLLM stats → StepSample → running totals (a Reading); config."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from workers.telemetry.reading import ITL_BOUNDS_S, TTFT_BOUNDS_S
from workers.vllm_plugin.accumulator import StatsAccumulator, StepSample, step_from_stats
from workers.vllm_plugin.config import PluginConfigError, config_from_env, role_from_kv_role


def _sched(**kw: Any) -> SimpleNamespace:
    base: dict[str, Any] = dict(
        num_running_reqs=2,
        num_waiting_reqs=1,
        num_skipped_waiting_reqs=0,
        kv_cache_usage=0.5,
        prefix_cache_stats=SimpleNamespace(queries=100, hits=25),
        connector_prefix_cache_stats=None,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def _iter(ttfts: list[float], itls: list[float], finished: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        prompt_token_stats=SimpleNamespace(
            total=10, computed=6, local_cache_hit=4, external_kv_transfer=0
        ),
        num_generation_tokens=3,
        num_preempted_reqs=0,
        finished_requests=[object()] * finished,
        time_to_first_tokens_iter=ttfts,
        inter_token_latencies_iter=itls,
    )


class TestStepFromStats:
    def test_reads_both(self) -> None:
        s = step_from_stats(_sched(num_skipped_waiting_reqs=2), _iter([0.1], [0.01], 1))
        assert (s.running, s.waiting, s.waiting_deferred, s.kv_usage) == (2, 3, 2, 0.5)
        assert (s.prompt_tokens, s.prompt_tokens_computed, s.generation_tokens) == (10, 6, 3)
        assert (s.finished, s.prefix_queries, s.prefix_hits) == (1, 100, 25)
        assert s.ttfts_s == (0.1,) and s.itls_s == (0.01,)

    def test_connector_prefix_stats(self) -> None:
        ext = SimpleNamespace(queries=40, hits=30)
        s = step_from_stats(_sched(connector_prefix_cache_stats=ext), None)
        assert (s.external_prefix_queries, s.external_prefix_hits) == (40, 30)

    def test_none_leaves_gauges_unknown(self) -> None:
        s = step_from_stats(None, None)
        assert s.running is None and s.kv_usage is None and s.prompt_tokens == 0


class TestAccumulator:
    def test_totals_and_gauges(self) -> None:
        acc = StatsAccumulator(kv_capacity_tokens=4096)
        for _ in range(10):
            acc.observe(step_from_stats(_sched(), _iter([0.05], [0.002, 0.003], 1)))
        rd = acc.reading()
        c = rd.counters
        assert (c["prompt_tokens"], c["generation_tokens"], c["requests_finished"]) == (
            100.0,
            30.0,
            10.0,
        )
        assert (c["prompt_tokens_computed"], c["prompt_tokens_local_cache"]) == (60.0, 40.0)
        assert (c["prefix_queries"], c["prefix_hits"]) == (1000.0, 250.0)
        assert (rd.running, rd.waiting, rd.kv_usage, rd.kv_capacity_tokens) == (2, 1, 0.5, 4096)
        assert rd.histograms["ttft"][-1] == (math.inf, 10.0)
        assert rd.histograms["itl"][-1] == (math.inf, 20.0)
        assert acc.records_total == 10

    def test_gauges_start_at_zero_like_vllms(self) -> None:
        rd = StatsAccumulator().reading()
        assert (rd.running, rd.waiting, rd.waiting_deferred, rd.kv_usage) == (0, 0, 0, 0)
        assert rd.is_vllm and all(v == 0 for v in rd.counters.values())

    def test_partial_steps_keep_last_gauges(self) -> None:
        acc = StatsAccumulator()
        acc.observe(step_from_stats(_sched(num_running_reqs=7), None))
        acc.observe(step_from_stats(None, _iter([], [])))
        assert acc.reading().running == 7

    @pytest.mark.parametrize(
        ("key", "bounds"), [("ttft", TTFT_BOUNDS_S), ("itl", ITL_BOUNDS_S)], ids=["ttft", "itl"]
    )
    def test_buckets_equal_prometheus_client(self, key: str, bounds: tuple[float, ...]) -> None:
        values = [0.0, *bounds, *(b * 0.999 for b in bounds), bounds[-1] * 2, math.nan, -1.0]
        acc = StatsAccumulator()
        if key == "ttft":
            acc.observe(StepSample(ttfts_s=values))
        else:
            acc.observe(StepSample(itls_s=values))
        reg = CollectorRegistry()
        h = Histogram("h", "h", buckets=bounds, registry=reg)
        for v in values:
            h.observe(v)
        expected = tuple(
            (float(s.labels["le"]), s.value)
            for s in next(iter(reg.collect())).samples
            if s.name == "h_bucket"
        )
        assert acc.reading().histograms[key] == expected

    def test_custom_bounds(self) -> None:
        acc = StatsAccumulator(ttft_bounds_s=(0.5, 0.1))
        acc.observe(StepSample(ttfts_s=(0.05, 0.3, 9.0)))
        assert acc.reading().histograms["ttft"] == ((0.1, 1.0), (0.5, 2.0), (math.inf, 3.0))


class TestConfig:
    def test_disabled_by_default(self) -> None:
        assert not config_from_env({}).enabled

    def test_env(self) -> None:
        cfg = config_from_env(
            {
                "SLAPLANE_PLUGIN_ENABLED": "true",
                "SLAPLANE_REDIS_URL": "redis://r:1/2",
                "SLAPLANE_CLUSTER": "k",
                "SLAPLANE_WORKER_ID": "w9",
                "SLAPLANE_ROLE": "decode",
                "SLAPLANE_PLUGIN_INTERVAL_MS": "250",
                "SLAPLANE_PLUGIN_WINDOW_S": "2.5",
            }
        )
        assert cfg.enabled and cfg.redis_url == "redis://r:1/2" and cfg.cluster == "k"
        assert (cfg.worker_id, cfg.role, cfg.interval_s, cfg.window_s) == (
            "w9",
            "decode",
            0.25,
            2.5,
        )

    def test_collects_all_errors(self) -> None:
        with pytest.raises(PluginConfigError) as ei:
            config_from_env(
                {
                    "SLAPLANE_ROLE": "router",
                    "SLAPLANE_PLUGIN_INTERVAL_MS": "x",
                    "SLAPLANE_PLUGIN_WINDOW_S": "-1",
                    "SLAPLANE_REDIS_URL": "memory://",
                }
            )
        msg = str(ei.value)
        for name in ("SLAPLANE_ROLE", "INTERVAL_MS", "WINDOW_S", "REDIS_URL"):
            assert name in msg

    @pytest.mark.parametrize(
        ("kv_role", "role"),
        [
            ("kv_producer", "prefill"),
            ("kv_consumer", "decode"),
            ("kv_both", "both"),
            (None, "both"),
        ],
    )
    def test_role_from_kv_role(self, kv_role: str | None, role: str) -> None:
        assert role_from_kv_role(kv_role) == role
