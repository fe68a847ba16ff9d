"""Admission policies: buckets, admit fraction with the premium rule, predictive, queue."""

from __future__ import annotations

import pytest

from controlplane.policy.request.admission import (
    AdmissionContext,
    AdmissionParams,
    AdmissionPolicy,
    LocalBuckets,
    LocalSlots,
    QueueParams,
    bucket_specs,
)
from controlplane.policy.request.admission.admit_fraction import (
    AdmitFractionGate,
    effective_fraction,
)
from controlplane.policy.request.admission.saturation import UtilizationDetector
from controlplane.schemas import Priority, RateLimit, TenantSLA

from ..helpers import NOW_S, req, snap

P, S, B = Priority.PREMIUM, Priority.STANDARD, Priority.BATCH


def test_bucket_specs_and_local_buckets() -> None:
    sla = TenantSLA(tenant="t", rate_limit=RateLimit(rpm=2, tpm=1000))
    specs = bucket_specs(sla, tokens=600)
    assert [s.kind for s in specs] == ["rpm", "tpm"]
    lb = LocalBuckets()
    assert all(lb.take("t", s, 0).allowed for s in specs)
    assert lb.take("t", specs[0], 0).allowed  # second request within rpm=2
    third = lb.take("t", specs[0], 0)
    assert not third.allowed and third.retry_after_s == pytest.approx(30.0)
    assert not lb.take("t", specs[1], 0).allowed  # 1200 > 1000 tpm
    assert bucket_specs(TenantSLA(tenant="t"), 10) == []


def test_local_slots() -> None:
    s = LocalSlots()
    assert s.acquire("t", "a", 1) and not s.acquire("t", "b", 1)
    s.release("t", "a")
    assert s.acquire("t", "b", 1) and s.count("t") == 1


@pytest.mark.parametrize(
    ("tenant", "prio", "fractions", "expect"),
    [
        ("p", P, {"p": 0.2, "s": 1.0}, 1.0),  # premium not shed while standard admitted
        ("p", P, {"p": 0.2, "s": 0.5, "b": 0.0}, 0.5),
        ("s", S, {"s": 0.3, "b": 0.0}, 0.3),
        ("b", B, {"b": 0.1, "s": 1.0}, 0.1),  # nobody below batch
        ("x", S, {}, 1.0),
    ],
)
def test_effective_fraction_premium_rule(
    tenant: str, prio: Priority, fractions: dict[str, float], expect: float
) -> None:
    prios = {"p": P, "s": S, "b": B}
    assert effective_fraction(tenant, prio, fractions, prios) == pytest.approx(expect)


def test_fraction_gate_is_deterministic_thinning() -> None:
    g = AdmitFractionGate()
    admitted = sum(g.admit("t", 0.25) for _ in range(100))
    assert admitted == 25
    assert all(g.admit("t", 1.0) for _ in range(5))
    assert not any(g.admit("z", 0.0) for _ in range(5))


@pytest.mark.parametrize(
    ("prio", "pred", "waiting", "admitted", "reason"),
    [
        (S, 500.0, {P.rank: 3}, True, "ok"),  # within target
        (S, 5000.0, {P.rank: 3}, False, "predicted_sla_miss"),
        (S, 5000.0, {S.rank: 3, B.rank: 9}, False, "hopeless"),  # late anyway: shed
        (S, 1000.0, {S.rank: 3}, True, "ok"),  # exactly on target is not late
        (P, 5000.0, {P.rank: 9}, True, "late_but_top_priority"),  # premium never shed
        (P, 5000.0, {}, True, "late_but_top_priority"),
        (B, 5000.0, {S.rank: 1}, False, "predicted_sla_miss"),
        (B, 5000.0, {}, False, "hopeless"),
    ],
)
def test_predictive_rejection(
    prio: Priority, pred: float, waiting: dict[int, int], admitted: bool, reason: str
) -> None:
    pol = AdmissionPolicy()
    r = req(priority=prio, ttft_target_ms=1000.0)
    v = pol.decide(
        AdmissionContext(r, predicted_ttft_ms=pred, drain_s=4.2, waiting_by_rank=waiting), NOW_S
    )
    assert (v.admitted, v.reason) == (admitted, reason)
    if not admitted:
        assert v.retry_after_s == pytest.approx(4.2)


def test_hopeless_only_with_a_queue_ahead() -> None:
    """Late with a 4.2 s queue ahead: shed (Retry-After = the drain). Late on an idle
    worker (too long for its target alone): served, or every retry would be refused."""
    pol = AdmissionPolicy()
    r = req(priority=S, ttft_target_ms=1000.0)
    queued = pol.decide(AdmissionContext(r, predicted_ttft_ms=5000.0, drain_s=4.2), NOW_S)
    assert (queued.admitted, queued.reason) == (False, "hopeless")
    idle = pol.decide(AdmissionContext(r, predicted_ttft_ms=1800.0, drain_s=0.0), NOW_S)
    assert (idle.admitted, idle.reason) == (True, "late_infeasible")


def test_shed_hopeless_off_serves_late() -> None:
    """The pre-goodput behaviour, kept as an option: with nobody more important
    waiting, a late request is served."""
    from controlplane.policy.request.admission.policy import AdmissionParams
    from controlplane.policy.request.admission.predictive import PredictiveParams

    pol = AdmissionPolicy(AdmissionParams(predictive=PredictiveParams(shed_hopeless=False)))
    r = req(priority=S, ttft_target_ms=1000.0)
    v = pol.decide(AdmissionContext(r, predicted_ttft_ms=5000.0, drain_s=4.2), NOW_S)
    assert (v.admitted, v.reason) == (True, "late_but_top_priority")


def test_admit_fraction_rejects_with_reason() -> None:
    pol = AdmissionPolicy()
    ctx = AdmissionContext(req(), admit_fractions={"t": 0.0}, tenant_priorities={"t": S})
    v = pol.decide(ctx, NOW_S)
    assert not v.admitted and v.reason == "admit_fraction"


def test_saturation_queue() -> None:
    pol = AdmissionPolicy(AdmissionParams(queue=QueueParams(max_size=1, max_wait_s=0.5)))
    v = pol.decide(AdmissionContext(req(), saturation=1.5), NOW_S)
    assert v.queue and not v.admitted
    v = pol.decide(AdmissionContext(req(), saturation=1.5, queued=1), NOW_S)
    assert not v.queue and v.reason == "queue_full"
    assert pol.decide(AdmissionContext(req(), saturation=0.5), NOW_S).admitted
    assert pol.queue_deadline_s(req(ttft_target_ms=200.0), NOW_S) == pytest.approx(NOW_S + 0.2)


def test_saturation_detector_counts_stale_as_full() -> None:
    d = UtilizationDetector()
    assert d.saturation([snap("a"), snap("b")], NOW_S) == 0.0
    stale = snap("a", ts_ms=0)
    assert d.saturation([stale, snap("b", waiting=32)], NOW_S) == pytest.approx(1.5)
    assert d.saturation([], NOW_S) == 1.0
