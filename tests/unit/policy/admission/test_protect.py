"""Priority protection: lower classes may not queue work that an active higher class
would then miss its TTFT target behind (engines serve in arrival order)."""

from __future__ import annotations

import pytest

from controlplane.policy.request.admission import (
    AdmissionContext,
    AdmissionParams,
    AdmissionPolicy,
)
from controlplane.policy.request.admission.protect import (
    ActiveTargets,
    PriorityProtector,
    ProtectParams,
)
from controlplane.schemas import Priority

from ..helpers import NOW_S, req

P, S, B = Priority.PREMIUM, Priority.STANDARD, Priority.BATCH
# premium 1000 ms and standard 2000 ms active; headroom 0.6 → limits 600 / 1200 ms
REJECTING = AdmissionParams(protect=ProtectParams(headroom_ratio=0.6, hold=False))
ACTIVE = {P.rank: 1000.0, S.rank: 2000.0, B.rank: 8000.0}


@pytest.mark.parametrize(
    ("prio", "target", "pred", "ahead", "active", "admitted", "reason", "retry"),
    [
        # batch meets its own 8 s target but would leave 5 s of queue for premium
        (B, 8000.0, 5000.0, 4800.0, ACTIVE, False, "protect_higher_priority", 4.4),
        (B, 8000.0, 590.0, 400.0, ACTIVE, True, "ok", None),  # under 0.6 x 1000
        # standard is held to premium's limit too, not to its own or batch's
        (S, 2000.0, 900.0, 700.0, ACTIVE, False, "protect_higher_priority", 0.5),
        (S, 2000.0, 900.0, 700.0, {S.rank: 2000.0, B.rank: 8000.0}, True, "ok", None),
        # batch with only standard active: limit 0.6 x 2000
        (B, 8000.0, 1100.0, 900.0, {S.rank: 2000.0}, True, "ok", None),
        (B, 8000.0, 1300.0, 900.0, {S.rank: 2000.0}, False, "protect_higher_priority", 0.5),
        # premium has nobody above it: never stopped here, however deep the queue
        (P, 1000.0, 9000.0, 8500.0, ACTIVE, True, "late_but_top_priority", None),
        # nothing queued ahead: a long prompt alone is admitted (waiting cannot help)
        (B, 8000.0, 3000.0, 0.0, ACTIVE, True, "ok", None),
        # nobody active above: plain admission
        (B, 8000.0, 5000.0, 4800.0, {}, True, "ok", None),
        # Retry-After clamped to the maximum
        (B, 90_000.0, 80_000.0, 79_000.0, ACTIVE, False, "protect_higher_priority", 60.0),
    ],
)
def test_protection_table(
    prio: Priority,
    target: float,
    pred: float,
    ahead: float,
    active: dict[int, float],
    admitted: bool,
    reason: str,
    retry: float | None,
) -> None:
    pol = AdmissionPolicy(REJECTING)
    r = req(priority=prio, ttft_target_ms=target)
    ctx = AdmissionContext(
        r, predicted_ttft_ms=pred, drain_s=ahead / 1000.0, active_ttft_targets_ms_by_rank=active
    )
    v = pol.decide(ctx, NOW_S)
    assert (v.admitted, v.reason) == (admitted, reason)
    if retry is not None:
        # Retry-After = time for the queue ahead to drain until this request fits
        assert v.retry_after_s == pytest.approx(retry)
        assert v.inputs["protected_limit_ms"] == pytest.approx(
            0.6 * min(t for k, t in active.items() if k > prio.rank)
        )


def test_headroom_param_and_disable() -> None:
    r = req(priority=B, ttft_target_ms=8000.0)
    strict = PriorityProtector(params=ProtectParams(headroom_ratio=0.3))
    loose = PriorityProtector(params=ProtectParams(headroom_ratio=1.0))
    off = PriorityProtector(params=ProtectParams(enabled=False))
    assert not strict.decide(r, 400.0, 200.0, ACTIVE).admitted  # 400 > 300
    assert loose.decide(r, 990.0, 500.0, ACTIVE).admitted
    assert off.decide(r, 9000.0, 8000.0, ACTIVE).admitted
    assert strict.decide(r, None, 8000.0, ACTIVE).admitted  # no prediction: no opinion


def test_default_holds_the_request_until_the_queue_drains() -> None:
    """Defaults: headroom 0.2 and holding on. A stopped lower-class request waits in the
    driver's admission queue (it may still make its own target) and is turned away only
    past ``max_held``; the hold never outlasts its own TTFT target."""
    pol = AdmissionPolicy()
    r = req(priority=B, ttft_target_ms=8000.0)
    ctx = AdmissionContext(r, 300.0, 0.1, active_ttft_targets_ms_by_rank=ACTIVE)
    v = pol.decide(ctx, NOW_S)  # 300 ms > 0.2 x 1000
    assert v.queue and not v.admitted and v.reason == "protect_higher_priority"
    assert pol.decide(
        AdmissionContext(r, 150.0, 0.1, active_ttft_targets_ms_by_rank=ACTIVE), NOW_S
    ).admitted
    full = AdmissionContext(r, 300.0, 0.1, queued=1024, active_ttft_targets_ms_by_rank=ACTIVE)
    v = pol.decide(full, NOW_S)
    assert not v.queue and v.reason == "protect_higher_priority" and v.retry_after_s == 0.5
    assert pol.queue_deadline_s(r, NOW_S) == pytest.approx(NOW_S + 8.0)  # own target
    long = req(priority=B, ttft_target_ms=600_000.0)
    assert pol.queue_deadline_s(long, NOW_S) == pytest.approx(NOW_S + 30.0)  # max_hold_s
    no_hold = AdmissionPolicy(AdmissionParams(protect=ProtectParams(hold=False)))
    assert no_hold.queue_deadline_s(long, NOW_S) == pytest.approx(NOW_S + 1.0)  # queue's own


def test_premium_is_never_held() -> None:
    pol = AdmissionPolicy()
    r = req(priority=P, ttft_target_ms=500.0)
    v = pol.decide(AdmissionContext(r, 9000.0, 8.0, active_ttft_targets_ms_by_rank=ACTIVE), NOW_S)
    assert v.admitted and not v.queue


def test_active_targets_window_and_tightest_per_rank() -> None:
    a = ActiveTargets(window_s=30.0)
    assert a.by_rank(0.0) == {}
    a.observe("gold", P.rank, 1000.0, 0.0)
    a.observe("platinum", P.rank, 500.0, 10.0)
    a.observe("std", S.rank, 2000.0, 10.0)
    assert a.by_rank(10.0) == {P.rank: 500.0, S.rank: 2000.0}
    assert a.by_rank(35.0) == {P.rank: 500.0, S.rank: 2000.0}  # gold expired, 500 still
    assert a.by_rank(41.0) == {}  # everyone idle for > 30 s
    a.observe("gold", P.rank, 1000.0, 50.0)
    assert a.by_rank(50.0) == {P.rank: 1000.0}
    a.observe("gold", P.rank, 700.0, 51.0)  # the operator tightened the SLA
    assert a.by_rank(51.0) == {P.rank: 700.0}


def test_active_targets_cache_sees_a_returning_tenant() -> None:
    a = ActiveTargets(window_s=5.0)
    a.observe("gold", P.rank, 1000.0, 0.0)
    a.observe("std", S.rank, 2000.0, 0.0)
    assert a.by_rank(1.0) == {P.rank: 1000.0, S.rank: 2000.0}
    a.observe("std", S.rank, 2000.0, 4.0)
    assert a.by_rank(6.0) == {S.rank: 2000.0}
    a.observe("gold", P.rank, 1000.0, 7.0)  # back after expiring: must show again
    assert a.by_rank(7.0) == {P.rank: 1000.0, S.rank: 2000.0}


@pytest.mark.parametrize(
    ("waited_s", "pred", "admitted", "reason", "queue"),
    [
        (0.0, 7000.0, False, "protect_higher_priority", True),  # arrival: held
        (0.5, 7000.0, False, "protect_higher_priority", True),  # 0.5 + 7 < 8 s: keep holding
        (1.5, 7000.0, False, "queue_timeout", False),  # 1.5 + 7 > 8 s: cannot make it now
        (7.0, 150.0, True, "ok", False),  # released in time: queue ahead drained
        (7.9, 150.0, False, "queue_timeout", False),  # released too late: refused, not late
    ],
)
def test_held_request_that_can_no_longer_make_its_target_leaves(
    waited_s: float, pred: float, admitted: bool, reason: str, queue: bool
) -> None:
    """Re-judged after waiting, a held request whose remaining budget cannot cover its
    predicted TTFT is refused: served, it would miss anyway and take capacity from
    requests that can still make theirs (so this drops nothing servable in time)."""
    pol = AdmissionPolicy()
    r = req(priority=B, ttft_target_ms=8000.0)
    ctx = AdmissionContext(r, pred, 0.1, waited_s=waited_s, active_ttft_targets_ms_by_rank=ACTIVE)
    v = pol.decide(ctx, NOW_S)
    assert (v.admitted, v.reason, v.queue) == (admitted, reason, queue)
