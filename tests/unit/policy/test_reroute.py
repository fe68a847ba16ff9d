"""Reroute: exclusions (down, stale, draining, KV-full, predicted breach), hysteresis,
fallback when a pool would be empty, deadband."""

from __future__ import annotations

from controlplane.policy.planner.reroute import RerouteParams, WorkerSignal, route_weights
from tests.unit.controller.builders import NOW_S, pool, worker

P = RerouteParams()


def test_healthy_pool_gets_full_weights_and_no_decisions_from_default() -> None:
    w, dec = route_weights(NOW_S, pool(), {}, frozenset(), {})
    assert set(w.values()) == {1.0} and dec == []


def test_kv_full_worker_is_excluded_with_reason_and_inputs() -> None:
    ws = pool()
    ws["d0"] = worker("d0", "decode", kv_usage=0.97)
    w, dec = route_weights(NOW_S, ws, {}, frozenset(), {})
    assert w["d0"] == 0.0 and w["d1"] == 1.0
    (d,) = dec
    assert (d.target, d.reason, d.inputs["kv_usage"]) == ("d0", "kv_full", 0.97)


def test_kv_hysteresis_keeps_worker_out_until_below_include_line() -> None:
    ws = pool()
    ws["d0"] = worker("d0", "decode", kv_usage=0.9)  # between 0.85 and 0.95
    w, _ = route_weights(NOW_S, ws, {}, frozenset(), {"d0": 0.0})
    assert w["d0"] == 0.0
    w, _ = route_weights(NOW_S, ws, {}, frozenset(), {"d0": 1.0})
    assert 0.0 < w["d0"] < 1.0  # in the band: soft weight, not excluded
    ws["d0"] = worker("d0", "decode", kv_usage=0.5)
    w, dec = route_weights(NOW_S, ws, {}, frozenset(), {"d0": 0.0})
    assert w["d0"] == 1.0 and dec[0].reason == "healthy"


def test_one_worker_down_and_one_stale() -> None:
    ws = pool(prefill=3)
    ws["p0"] = worker("p0", up=False)
    ws["p1"] = worker("p1", ts_ms=int((NOW_S - 10) * 1000))
    w, dec = route_weights(NOW_S, ws, {}, frozenset(), {})
    assert (w["p0"], w["p1"], w["p2"]) == (0.0, 0.0, 1.0)
    assert {d.target: d.reason for d in dec} == {"p0": "down", "p1": "stale"}


def test_draining_worker_gets_zero() -> None:
    w, dec = route_weights(NOW_S, pool(), {}, frozenset({"p1"}), {})
    assert w["p1"] == 0.0 and dec[0].reason == "draining"


def test_predicted_breach_excludes_with_latency_hysteresis() -> None:
    sig = {"p0": WorkerSignal(ttft_ratio=1.3), "p1": WorkerSignal(ttft_ratio=0.2)}
    w, dec = route_weights(NOW_S, pool(), sig, frozenset(), {})
    assert w["p0"] == 0.0 and dec[0].reason == "predicted_breach"
    sig["p0"] = WorkerSignal(ttft_ratio=0.8)  # below exclude (1.0), above include (0.7)
    w, _ = route_weights(NOW_S, pool(), sig, frozenset(), {"p0": 0.0})
    assert w["p0"] == 0.0


def test_decode_worker_ignores_ttft_ratio() -> None:
    w, _ = route_weights(NOW_S, pool(), {"d0": WorkerSignal(ttft_ratio=9.0)}, frozenset(), {})
    assert w["d0"] == 1.0


def test_all_excluded_falls_back_to_all_usable_and_records_it() -> None:
    ws = pool()
    ws["p0"] = worker("p0", kv_usage=0.99)
    ws["p1"] = worker("p1", kv_usage=0.99)
    w, dec = route_weights(NOW_S, ws, {}, frozenset(), {})
    assert w["p0"] == w["p1"] == P.soft_floor
    assert {d.reason for d in dec if d.target.startswith("p")} == {"fallback_all_excluded"}


def test_fallback_never_includes_down_or_draining() -> None:
    ws = pool()
    ws["p0"] = worker("p0", up=False)
    ws["p1"] = worker("p1", kv_usage=0.99)
    w, _ = route_weights(NOW_S, ws, {}, frozenset(), {})
    assert w["p0"] == 0.0 and w["p1"] > 0.0


def test_small_changes_within_deadband_are_not_written() -> None:
    ws = pool()
    ws["d0"] = worker("d0", "decode", kv_usage=0.9)
    w, dec = route_weights(NOW_S, ws, {}, frozenset(), {"d0": 0.6})
    assert w["d0"] == 0.6 and dec == []


def test_ties_are_deterministic() -> None:
    a = route_weights(NOW_S, pool(prefill=4), {}, frozenset({"p3"}), {})
    b = route_weights(NOW_S, pool(prefill=4), {}, frozenset({"p3"}), {})
    assert a == b
