"""Breach probability: per-request miss from the predicted latency, objective breach
over the horizon, and the blend with observed outcomes."""

from __future__ import annotations

import pytest

from controlplane.policy.planner.breach import (
    BreachParams,
    miss_probability,
    objective_breach_probability,
    tenant_risk,
)
from controlplane.policy.planner.traffic import Outcome
from controlplane.schemas import Priority
from tests.unit.controller.builders import tenant

SLA = tenant("t", Priority.PREMIUM, ttft_ms=500.0, itl_ms=50.0, objective=0.99)


def test_miss_probability_is_half_at_the_target_and_monotone() -> None:
    assert miss_probability(500.0, 500.0, 0.3) == pytest.approx(0.5)
    ps = [miss_probability(x, 500.0, 0.3) for x in (100.0, 300.0, 500.0, 800.0, 2000.0)]
    assert ps == sorted(ps) and ps[0] < 0.001 and ps[-1] > 0.999
    assert miss_probability(float("inf"), 500.0, 0.3) == 1.0


def test_objective_breach_depends_on_the_objective() -> None:
    # a 3 % miss rate over 300 requests breaks 99 % but not 95 %
    assert objective_breach_probability(0.03, 300, 0.99) > 0.9
    assert objective_breach_probability(0.03, 300, 0.95) < 0.05
    assert objective_breach_probability(0.0, 300, 0.99) == 0.0


def test_quiet_prediction_gives_low_risk() -> None:
    r = tenant_risk(SLA, 100.0, 10.0, 0.3, 0.3, [], 10.0, 0.0, BreachParams())
    assert r.breach < 0.01 and r.observed_miss_ratio is None
    assert r.expected_requests == 300.0


def test_predicted_overload_gives_high_risk() -> None:
    r = tenant_risk(SLA, 900.0, 10.0, 0.3, 0.3, [], 10.0, 0.0, BreachParams())
    assert r.breach_probability["ttft"] > 0.99 and r.breach_probability["itl"] < 0.01
    assert r.breach > 0.99


def test_observed_misses_raise_risk_and_fade() -> None:
    bad = [Outcome(0.0, 900.0, 10.0, True) for _ in range(100)]
    p = BreachParams(half_life_s=10.0)
    now = tenant_risk(SLA, 100.0, 10.0, 0.3, 0.3, bad, 10.0, 0.0, p)
    later = tenant_risk(SLA, 100.0, 10.0, 0.3, 0.3, bad, 10.0, 60.0, p)
    assert now.breach > 0.99 and now.observed_miss_ratio == 1.0
    assert later.miss_probability["all"] < now.miss_probability["all"] / 2


def test_rejections_count_as_misses() -> None:
    rej = [Outcome(0.0, None, None, False) for _ in range(50)]
    r = tenant_risk(SLA, 100.0, 10.0, 0.3, 0.3, rej, 10.0, 0.0, BreachParams())
    assert r.miss_probability["itl"] > 0.5


def test_rejections_miss_ttft_and_the_sla_but_not_itl() -> None:
    """A rejected request never decoded: blaming ITL for it made the planner add decode
    replicas for shedding caused by prefill (and, under a GPU budget, take them from
    prefill). Failures still miss every SLO (the test above)."""
    rej = [Outcome(0.0, None, None, False, rejected=True) for _ in range(50)]
    r = tenant_risk(SLA, 100.0, 10.0, 0.3, 0.3, rej, 10.0, 0.0, BreachParams())
    assert r.miss_probability["ttft"] > 0.5 and r.miss_probability["all"] > 0.5
    assert r.miss_probability["itl"] < 0.05
