"""Throttle: lowest priority first, never premium while a lower class is admitted, AIMD."""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.policy.planner.throttle import Throttle, ThrottleParams
from controlplane.policy.planner.types import TenantRisk
from controlplane.schemas import Priority
from tests.unit.controller.builders import TENANTS, tenant


def risk(t: str, p: float) -> TenantRisk:
    return TenantRisk(t, 0.0, 0.0, {"all": p}, {"ttft": p, "itl": 0.0, "all": p})


def risks(**kw: float) -> dict[str, TenantRisk]:
    return {t: risk(t, p) for t, p in kw.items()}


def run(
    th: Throttle, now: float, r: Mapping[str, TenantRisk], cur: Mapping[str, float]
) -> dict[str, float]:
    frac, _ = th.decide(now, TENANTS, r, cur)
    return frac


def test_no_risk_admits_everyone() -> None:
    frac, dec = Throttle().decide(0.0, TENANTS, risks(), {})
    assert frac == {"gold": 1.0, "silver": 1.0, "bronze": 1.0} and dec == []


def test_premium_at_risk_sheds_batch_first_and_only_batch() -> None:
    frac, dec = Throttle().decide(0.0, TENANTS, risks(gold=0.9), {})
    assert frac == {"gold": 1.0, "silver": 1.0, "bronze": 0.5}
    assert [(d.target, d.reason) for d in dec] == [("bronze", "shed_for_higher_priority")]
    assert dec[0].inputs["breach_above"]["gold"] == 0.9


def test_decrease_is_rate_limited_in_time_not_ticks() -> None:
    th = Throttle(ThrottleParams(decrease_interval_s=5.0))
    cur = run(th, 0.0, risks(gold=0.9), {})
    for t in (1.0, 2.0, 3.0, 4.0):
        cur = run(th, t, risks(gold=0.9), cur)
    assert cur["bronze"] == 0.5
    assert run(th, 5.0, risks(gold=0.9), cur)["bronze"] == 0.25


def test_standard_is_shed_only_after_batch_reaches_zero() -> None:
    th = Throttle(ThrottleParams(decrease_interval_s=0.0))
    cur: dict[str, float] = {}
    seen = []
    for t in range(12):
        cur = run(th, float(t), risks(gold=0.95), cur)
        seen.append(dict(cur))
        assert cur["gold"] == 1.0
        if cur["silver"] < 1.0:
            assert cur["bronze"] == 0.0
    assert seen[-1]["silver"] == 0.0 and seen[-1]["bronze"] == 0.0


def test_standard_at_risk_never_sheds_standard_or_premium() -> None:
    th = Throttle(ThrottleParams(decrease_interval_s=0.0))
    cur: dict[str, float] = {}
    for t in range(20):
        cur = run(th, float(t), risks(silver=0.99), cur)
    assert cur == {"gold": 1.0, "silver": 1.0, "bronze": 0.0}


def test_batch_at_risk_alone_sheds_nobody() -> None:
    frac, dec = Throttle().decide(0.0, TENANTS, risks(bronze=1.0), {})
    assert set(frac.values()) == {1.0} and dec == []


def test_recovery_is_additive_and_top_down() -> None:
    th = Throttle(ThrottleParams(increase_interval_s=0.0, increase_step=0.25))
    cur = {"gold": 1.0, "silver": 0.0, "bronze": 0.0}
    cur = run(th, 0.0, risks(gold=0.05), cur)
    assert cur == {"gold": 1.0, "silver": 0.25, "bronze": 0.0}
    for t in range(1, 4):
        cur = run(th, float(t), risks(gold=0.05), cur)
    assert cur["silver"] == 1.0 and cur["bronze"] == 0.0
    assert run(th, 4.0, risks(gold=0.05), cur)["bronze"] == 0.25


def test_hysteresis_holds_between_thresholds() -> None:
    th = Throttle(ThrottleParams(increase_interval_s=0.0, shed_above=0.5, recover_below=0.2))
    cur = {"gold": 1.0, "silver": 1.0, "bronze": 0.5}
    frac, dec = th.decide(0.0, TENANTS, risks(gold=0.3), cur)
    assert frac == cur and dec == []


def test_ties_two_batch_tenants_are_shed_together() -> None:
    tenants = {**TENANTS, "bronze2": tenant("bronze2", Priority.BATCH)}
    frac, dec = Throttle().decide(0.0, tenants, risks(gold=0.9), {"bronze2": 0.8})
    assert frac["bronze"] == 0.5 and frac["bronze2"] == 0.4
    assert sorted(d.target for d in dec) == ["bronze", "bronze2"]


def test_repair_never_leaves_premium_shed_while_batch_admitted() -> None:
    frac, dec = Throttle().decide(0.0, TENANTS, risks(), {"gold": 0.3, "bronze": 1.0})
    assert frac["gold"] == 1.0
    assert any(d.reason == "priority_order_repair" for d in dec)


def test_small_fractions_snap_to_zero() -> None:
    frac, _ = Throttle(ThrottleParams(zero_below=0.1)).decide(
        0.0, TENANTS, risks(gold=0.9), {"bronze": 0.15}
    )
    assert frac["bronze"] == 0.0


def test_itl_slo_ignores_ttft_risk_that_shedding_cannot_fix() -> None:
    """With priority queueing at the gateways, a lower class adds nothing to a higher
    one's TTFT: only ITL risk (shared decode batches) sheds; recovery still happens."""
    ttft_only = {"gold": TenantRisk("gold", 0.0, 0.0, {}, {"ttft": 0.9, "itl": 0.0, "all": 0.9})}
    frac, dec = Throttle().decide(0.0, TENANTS, ttft_only, {}, slo="itl")
    assert frac == {"gold": 1.0, "silver": 1.0, "bronze": 1.0} and dec == []
    itl = {"gold": TenantRisk("gold", 0.0, 0.0, {}, {"ttft": 0.0, "itl": 0.9, "all": 0.9})}
    frac, dec = Throttle().decide(0.0, TENANTS, itl, {}, slo="itl")
    assert frac["bronze"] == 0.5
    frac, _ = Throttle().decide(0.0, TENANTS, ttft_only, {"bronze": 0.5}, slo="itl")
    assert frac["bronze"] == 0.6  # recovering: nothing sheddable is at risk
