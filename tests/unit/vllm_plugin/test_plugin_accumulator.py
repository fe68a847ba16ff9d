"""Pure parts of the plugin: stats → StepSample → WorkerSnapshot, config parsing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from workers.vllm_plugin.accumulator import (
    Identity,
    StepSample,
    TelemetryAccumulator,
    quantile,
    step_from_stats,
)
from workers.vllm_plugin.config import PluginConfigError, config_from_env, role_from_kv_role

IDENT = Identity(cluster="c", worker="w", role="decode", model="m", url="http://x")


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
        s = step_from_stats(_sched(num_skipped_waiting_reqs=2), _iter([0.1], [0.01], 1), 5.0)
        assert (s.running, s.waiting, s.waiting_deferred, s.kv_usage) == (2, 3, 2, 0.5)
        assert (s.prompt_tokens, s.prompt_tokens_computed, s.generation_tokens) == (10, 6, 3)
        assert (s.finished, s.prefix_queries, s.prefix_hits) == (1, 100, 25)
        assert s.ttfts_s == (0.1,) and s.itls_s == (0.01,)

    def test_none_leaves_gauges_unknown(self) -> None:
        s = step_from_stats(None, None, 1.0)
        assert s.running is None and s.kv_usage is None and s.prompt_tokens == 0


class TestAccumulator:
    def test_quantiles_rates_and_totals(self) -> None:
        acc = TelemetryAccumulator(IDENT, window_s=5.0, rate_window_s=1.0)
        first = acc.snapshot(0.0, 1000)
        assert first.ttft_p50_ms is None and first.prefix_hit_rate is None
        assert first.source == "plugin" and first.seq == 1
        for i in range(10):
            acc.observe(step_from_stats(_sched(), _iter([0.01 * (i + 1)], [0.002]), 0.1 * i))
        assert acc.dirty
        snap = acc.snapshot(1.0, 2000)
        assert not acc.dirty
        assert snap.ttft_p50_ms == pytest.approx(55.0)
        assert snap.ttft_p99_ms == pytest.approx(99.1)
        assert snap.itl_p90_ms == pytest.approx(2.0)
        assert snap.prompt_tokens_total == 100 and snap.generation_tokens_total == 30
        assert snap.prompt_tokens_per_s == pytest.approx(100.0)
        assert snap.gen_tokens_per_s == pytest.approx(30.0)
        assert snap.prefix_hit_rate == pytest.approx(0.25)
        assert (snap.running, snap.waiting, snap.kv_usage) == (2, 1, 0.5)
        assert snap.extra["prompt_tokens_local_cache_total"] == 40
        assert (snap.ts_ms, snap.seq, snap.url) == (2000, 2, "http://x")

    def test_window_expires_samples_and_rates_decay(self) -> None:
        acc = TelemetryAccumulator(IDENT, window_s=2.0, rate_window_s=1.0)
        acc.snapshot(0.0, 0)
        acc.observe(StepSample(at_s=0.5, ttfts_s=(0.1,), prompt_tokens=50))
        assert acc.snapshot(1.0, 0).ttft_p50_ms == pytest.approx(100.0)
        acc.snapshot(2.0, 0)
        late = acc.snapshot(3.0, 0)
        assert late.ttft_p50_ms is None
        assert late.prompt_tokens_per_s == 0.0 and late.prompt_tokens_total == 50

    def test_partial_steps_keep_last_gauges(self) -> None:
        acc = TelemetryAccumulator(IDENT)
        acc.observe(step_from_stats(_sched(num_running_reqs=7), None, 0.0))
        acc.observe(step_from_stats(None, _iter([], []), 0.1))
        assert acc.snapshot(0.2, 0).running == 7

    def test_extra_is_merged(self) -> None:
        acc = TelemetryAccumulator(IDENT, kv_capacity_tokens=4096)
        snap = acc.snapshot(0.0, 0, up=False, extra={"plugin_publish_errors_total": 3.0})
        assert not snap.up and snap.kv_capacity_tokens == 4096
        assert snap.extra["plugin_publish_errors_total"] == 3.0


def test_quantile_interpolates() -> None:
    assert quantile([1.0], 0.99) == 1.0
    assert quantile([0.0, 10.0], 0.5) == 5.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.0) == 1.0


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
            }
        )
        assert cfg.enabled and cfg.redis_url == "redis://r:1/2" and cfg.cluster == "k"
        assert (cfg.worker_id, cfg.role, cfg.interval_s) == ("w9", "decode", 0.25)

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
