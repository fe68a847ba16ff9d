"""Prometheus re-export: a fresh registry per test, read back with get_sample_value."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from controlplane.schemas import WorkerSnapshot
from workers.agent.collector import SnapshotCollector
from workers.agent.metrics import AgentMetrics

SNAP = WorkerSnapshot(
    cluster="c1",
    worker="w1",
    role="decode",
    model="m",
    kv_usage=0.25,
    running=3,
    waiting=7,
    ttft_p50_ms=120.0,
    ttft_p90_ms=300.0,
    ttft_p99_ms=None,
    itl_p50_ms=8.0,
    itl_p90_ms=12.0,
    itl_p99_ms=40.0,
    ts_ms=10_000,
)
L = {"cluster": "c1", "worker": "w1", "role": "decode", "model": "m"}


def _registry(snap: WorkerSnapshot | None, last_ok: float | None = 10.0) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(SnapshotCollector(lambda: snap, lambda: last_ok, lambda: 12.5))
    return reg


def test_design_names_and_values() -> None:
    reg = _registry(SNAP)
    g = reg.get_sample_value
    assert g("slaplane_worker_up", L) == 1.0
    assert g("slaplane_worker_kv_cache_usage_ratio", L) == 0.25
    assert g("slaplane_worker_requests_running", L) == 3.0
    assert g("slaplane_worker_requests_waiting", L) == 7.0
    assert g("slaplane_worker_telemetry_age_seconds", L) == pytest.approx(2.5)
    assert g("slaplane_worker_ttft_seconds", {**L, "quantile": "0.5"}) == pytest.approx(0.12)
    assert g("slaplane_worker_ttft_seconds", {**L, "quantile": "0.9"}) == pytest.approx(0.3)
    assert g("slaplane_worker_ttft_seconds", {**L, "quantile": "0.99"}) is None  # no data
    assert g("slaplane_worker_itl_seconds", {**L, "quantile": "0.99"}) == pytest.approx(0.04)


def test_down_worker_is_exported_as_down_with_growing_age() -> None:
    reg = _registry(replace(SNAP, up=False, ts_ms=12_000), last_ok=2.5)
    assert reg.get_sample_value("slaplane_worker_up", L) == 0.0
    assert reg.get_sample_value("slaplane_worker_telemetry_age_seconds", L) == pytest.approx(10.0)
    assert reg.get_sample_value("slaplane_worker_requests_waiting", L) == 7.0


def test_nothing_before_first_snapshot() -> None:
    assert b"slaplane_worker" not in generate_latest(_registry(None))


def test_values_are_read_at_scrape_time() -> None:
    box: dict[str, WorkerSnapshot] = {"s": SNAP}
    reg = CollectorRegistry()
    reg.register(SnapshotCollector(lambda: box["s"], lambda: 10.0, lambda: 10.0))
    assert reg.get_sample_value("slaplane_worker_requests_waiting", L) == 7.0
    box["s"] = replace(SNAP, waiting=1)
    assert reg.get_sample_value("slaplane_worker_requests_waiting", L) == 1.0


def test_agent_counters_are_zero_initialised_and_count() -> None:
    reg = CollectorRegistry()
    m = AgentMetrics(reg, "c1", "w1")
    lab = {"cluster": "c1", "worker": "w1"}
    assert reg.get_sample_value("slaplane_agent_scrapes_total", {**lab, "result": "timeout"}) == 0
    m.scrape("ok", 0.004)
    m.scrape("timeout", 0.2)
    m.parse_error()
    m.publish(False)
    m.publish(True)
    assert reg.get_sample_value("slaplane_agent_scrapes_total", {**lab, "result": "ok"}) == 1
    assert reg.get_sample_value("slaplane_agent_scrapes_total", {**lab, "result": "timeout"}) == 1
    assert reg.get_sample_value("slaplane_agent_parse_errors_total", lab) == 1
    assert reg.get_sample_value("slaplane_agent_publish_errors_total", lab) == 1
    assert reg.get_sample_value("slaplane_agent_snapshots_published_total", lab) == 1
    assert reg.get_sample_value("slaplane_agent_scrape_duration_seconds_count", lab) == 2
