"""The breach benchmark's scoring: non-overlapping windows, labels, AUC and its interval."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks.bench_breach_auc import (
    MIN_CLASS,
    Point,
    adjacent,
    auc,
    auc_interval,
    label_windows,
    parse_run,
    score,
    window_ticks,
)
from controlplane.policy.planner.types import Effects, TenantRisk
from controlplane.replay.accounting import Outcome
from controlplane.schemas import TenantSLA


def effects(now_s: float, p: float = 0.5, raw: float | None = None) -> Effects:
    risk = TenantRisk("a", 100.0, 10.0, {"all": 0.1}, {"all": p},
                      raw_breach_probability=None if raw is None else {"all": raw})  # fmt: skip
    return Effects(now_s, {}, frozenset(), {}, {"a": risk})


def test_window_ticks_take_one_tick_per_horizon_after_warmup() -> None:
    ticks = [effects(t) for t in np.arange(0.0, 200.0, 5.0)]
    got = [e.now_s for e in window_ticks(reversed(ticks), horizon_s=30.0, warmup_s=60.0)]
    assert got == [60.0, 90.0, 120.0, 150.0, 180.0]


def test_window_ticks_skip_irregular_ticks_inside_a_window() -> None:
    got = [e.now_s for e in window_ticks([effects(t) for t in (0, 7, 29, 31, 50, 61, 62)], 30, 0)]
    assert got == [0, 31, 61]


def test_label_windows_one_point_per_window_with_requests() -> None:
    sla = TenantSLA(tenant="a", objective=0.9)
    # window (60, 90]: 10 requests, 2 missed -> breached; (90, 120]: none -> left out;
    # (120, 150]: 10 requests, 1 missed -> met exactly 0.9, not breached
    outs = [Outcome(i, "a", 61.0 + i, 100 * (i + 1), 10, met=i >= 2) for i in range(10)]
    outs += [Outcome(20 + i, "a", 121.0 + i, 50, 10, met=i != 0) for i in range(10)]
    ticks = [effects(t, p=t / 1000, raw=t / 500) for t in np.arange(0.0, 160.0, 5.0)]
    pts = label_windows(ticks, outs, {"a": sla}, 30.0, 60.0, scale=2.0)
    assert [(p.tick_s, p.breached, p.requests, p.misses) for p in pts] == [
        (60.0, True, 10, 2),
        (120.0, False, 10, 1),
    ]
    assert pts[0].max_prompt_tokens == 1000 and pts[0].scale == 2.0
    assert pts[0].prob == pytest.approx(0.06) and pts[0].raw == pytest.approx(0.12)


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(200) < 0.3
    s = np.round(rng.random(200) + 0.3 * y, 1)  # ties on purpose
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert auc(np.zeros(5, dtype=bool), s[:5]) is None


def test_auc_interval_brackets_the_estimate_and_needs_two_of_each() -> None:
    rng = np.random.default_rng(2)
    y = np.array([True] * 20 + [False] * 40)
    s = rng.random(60) + 0.5 * y
    ci = auc_interval(y, s)
    est = auc(y, s)
    assert ci is not None and est is not None
    assert ci[0] < est < ci[1] and ci[1] - ci[0] < 0.5
    assert auc_interval(np.array([True, False, False]), np.array([0.1, 0.2, 0.3])) is None


def test_score_counts_and_countable() -> None:
    pts = [Point(1.0, float(i), "a", 0.9 if i < 6 else 0.1, i < 6, 10, 0.5) for i in range(20)]
    c = score(pts)
    assert (c.windows, c.breached, c.calm) == (20, 6, 14)
    assert c.auc == 1.0 and c.countable == (MIN_CLASS <= 6)
    assert c.brier == pytest.approx(0.01)
    assert c.base_rate_brier == pytest.approx(0.3 * 0.7)


def test_adjacent_pairs_only_consecutive_windows_of_one_tenant_and_scale() -> None:
    pts = [Point(1.0, t, "a", 0.0, False, 1, 0.0) for t in (60.0, 90.0, 150.0, 180.0)]
    pts.append(Point(2.0, 120.0, "a", 0.0, False, 1, 0.0))
    pairs = [(a.tick_s, b.tick_s) for a, b in adjacent(pts, 30.0)]
    assert pairs == [(60.0, 90.0), (150.0, 180.0)]


def test_parse_run() -> None:
    r = parse_run("data/traces/synthetic_trace.jsonl@0.5,1@1x3", 2, 2)
    assert r.scales == (0.5, 1.0) and (r.prefill, r.decode) == (1, 3)
    assert r.trace.is_absolute() and r.label == "Mooncake, 1P+3D"
    assert parse_run("/x/y.csv", 2, 2).scales == (1.0,)
