"""Displacement: a newcomer predicted late behind a queue takes the place of the largest
unstarted request ahead of it, when that alone makes it on time (online Moore-Hodgson)."""

from __future__ import annotations

import pytest

from controlplane.policy.request.admission import (
    AdmissionContext,
    AdmissionParams,
    AdmissionPolicy,
    DisplaceParams,
    QueuedRequest,
)
from controlplane.policy.request.admission.displace import pick_victim
from controlplane.schemas import Priority

from ..helpers import NOW_S, req

P, S, B = Priority.PREMIUM, Priority.STANDARD, Priority.BATCH
MS_PER_TOKEN = 0.025  # 40 tokens/ms drain


def q(rid: str, tokens: int, prio: Priority = S) -> QueuedRequest:
    return QueuedRequest(rid, prio.rank, tokens)


def pick(queued: list[QueuedRequest], *, prio: Priority = S, tokens: int = 500,
         predicted: float = 2500.0, target: float = 2000.0,
         params: DisplaceParams | None = None) -> str | None:  # fmt: skip
    v = pick_victim(
        params or DisplaceParams(),
        rank=prio.rank,
        uncached_tokens=tokens,
        predicted_ttft_ms=predicted,
        target_ms=target,
        queued=queued,
        queue_ms_per_token=MS_PER_TOKEN,
    )
    return None if v is None else v.request_id


def test_takes_the_largest_that_makes_room() -> None:
    # 500 ms late: removing 8,000 tokens saves 200 ms (not enough), 24,000 saves 600 ms
    assert pick([q("a", 8000), q("big", 24000), q("b", 12000)]) == "big"


def test_none_when_even_the_largest_does_not_save_enough() -> None:
    assert pick([q("a", 8000), q("b", 12000)]) is None  # at most 300 ms of 500 saved


def test_only_larger_requests_are_victims() -> None:
    # a smaller (or equal) request would save enough time, but displacing it grows the
    # kept work: Moore-Hodgson drops the largest, and that is the newcomer
    assert pick([q("small", 400), q("same", 500)], predicted=2005.0) is None
    assert pick([q("bigger", 501)], predicted=2005.0) == "bigger"
    ratio = DisplaceParams(min_size_ratio=2.0)
    assert pick([q("x", 900)], predicted=2005.0, params=ratio) is None
    assert pick([q("x", 1001)], predicted=2005.0, params=ratio) == "x"


def test_never_displaces_a_higher_priority() -> None:
    assert pick([q("prem", 30000, P)], prio=S) is None
    assert pick([q("batch", 30000, B)], prio=S) == "batch"
    assert pick([q("std", 30000, S), q("batch", 25000, B)], prio=B) == "batch"
    assert pick([q("std", 30000, S)], prio=P) == "std"


def test_disabled_or_no_drain_rate() -> None:
    assert pick([q("big", 30000)], params=DisplaceParams(enabled=False)) is None
    v = pick_victim(DisplaceParams(), rank=S.rank, uncached_tokens=1, predicted_ttft_ms=3000,
                    target_ms=2000, queued=[q("big", 10**6)], queue_ms_per_token=0.0)  # fmt: skip
    assert v is None


def ctx(predicted: float, queued: list[QueuedRequest], prio: Priority = S,
        cached: int = 0, drain_s: float = 1.0) -> AdmissionContext:  # fmt: skip
    return AdmissionContext(
        req(prompt=600, priority=prio, ttft_target_ms=2000.0),
        predicted_ttft_ms=predicted,
        drain_s=drain_s,
        cached_tokens=cached,
        queued_ahead=queued,
        queue_ms_per_token=MS_PER_TOKEN,
    )


def test_admission_admits_in_place_of_a_hopeless_refusal() -> None:
    pol = AdmissionPolicy()
    v = pol.decide(ctx(2400.0, [q("big", 20000)]), NOW_S)
    assert (v.admitted, v.reason, v.displace) == (True, "displacing", "big")
    assert v.inputs["victim_uncached_tokens"] == 20000
    # nothing worth displacing: the newcomer itself is refused, as before
    v = pol.decide(ctx(2400.0, [q("small", 300)]), NOW_S)
    assert (v.admitted, v.reason, v.displace) == (False, "hopeless", None)
    # on time: no displacement even with a big request queued
    v = pol.decide(ctx(1500.0, [q("big", 20000)]), NOW_S)
    assert (v.admitted, v.displace) == (True, None)


def test_newcomer_size_is_its_uncached_part() -> None:
    pol = AdmissionPolicy()
    # 600-token prompt with 500 cached: 100 to prefill, so a 400-token request is larger
    assert pol.decide(ctx(2005.0, [q("x", 400)], cached=500), NOW_S).displace == "x"
    assert pol.decide(ctx(2005.0, [q("x", 400)], cached=0), NOW_S).displace is None


def test_premium_late_behind_lower_classes_displaces_them() -> None:
    v = AdmissionPolicy().decide(ctx(2400.0, [q("batch", 20000, B)], prio=P), NOW_S)
    assert (v.admitted, v.reason, v.displace) == (True, "displacing", "batch")


@pytest.mark.parametrize("enabled", [True, False])
def test_params_switch(enabled: bool) -> None:
    pol = AdmissionPolicy(AdmissionParams(displace=DisplaceParams(enabled=enabled)))
    v = pol.decide(ctx(2400.0, [q("big", 20000)]), NOW_S)
    assert v.admitted is enabled
    assert v.reason == ("displacing" if enabled else "hopeless")


def test_shedding_off_serves_late_and_displaces_nobody() -> None:
    from controlplane.policy.request.admission.predictive import PredictiveParams

    pol = AdmissionPolicy(AdmissionParams(predictive=PredictiveParams(shed_hopeless=False)))
    for prio in (S, P):
        v = pol.decide(ctx(2400.0, [q("big", 20000, B)], prio=prio), NOW_S)
        assert (v.admitted, v.displace) == (True, None)


def test_may_displace_follows_the_rejecters_late_limit() -> None:
    """Drivers gather candidates only when ``decide`` could use them: the same limit as
    the rejecter (target x slack_ratio), and never with displacement off."""
    from controlplane.policy.request.admission.predictive import PredictiveParams

    r = req(priority=S, ttft_target_ms=2000.0)
    pol = AdmissionPolicy()
    assert pol.may_displace(r, 2001.0) and not pol.may_displace(r, 2000.0)
    assert not pol.may_displace(r, None)
    loose = AdmissionPolicy(AdmissionParams(predictive=PredictiveParams(slack_ratio=0.5)))
    assert loose.may_displace(r, 1001.0) and not loose.may_displace(r, 1000.0)
    off = AdmissionPolicy(AdmissionParams(displace=DisplaceParams(enabled=False)))
    assert not off.may_displace(r, 5000.0)
