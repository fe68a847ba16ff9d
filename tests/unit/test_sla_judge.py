"""``TenantSLA.judge``: the one SLA rule every caller uses (gateway, replay, breach labels)."""

from __future__ import annotations

import pytest

from controlplane.schemas import SlaJudgement, TenantSLA

SLA = TenantSLA(tenant="a", ttft_ms=500, itl_ms=25)
E2E = TenantSLA(tenant="a", ttft_ms=500, itl_ms=25, e2e_ms=1000)
NO = SlaJudgement(ttft=False, itl=False, e2e=False, met=False)


@pytest.mark.parametrize(
    ("sla", "ttft_ms", "tpot_ms", "e2e_ms", "want"),
    [
        (SLA, 500.0, 25.0, 900.0, (True, True, True, True)),  # bounds are inclusive
        (SLA, 500.1, 10.0, 900.0, (False, True, True, False)),
        (SLA, 100.0, 25.1, 900.0, (True, False, True, False)),
        (SLA, 100.0, None, 900.0, (True, True, True, True)),  # < 2 tokens: no TPOT, met
        (SLA, None, None, 900.0, (False, True, True, False)),  # ok but no first token seen
        (SLA, 100.0, 10.0, None, (True, True, True, True)),  # no e2e target: e2e ignored
        (SLA, 100.0, 10.0, 1e9, (True, True, True, True)),
        (E2E, 100.0, 10.0, 1000.0, (True, True, True, True)),
        (E2E, 100.0, 10.0, 1000.1, (True, True, False, False)),
        (E2E, 100.0, 10.0, None, (True, True, False, False)),  # target set, not measured
        (E2E, 600.0, 30.0, 2000.0, (False, False, False, False)),
    ],
)
def test_ok_requests_per_target(
    sla: TenantSLA,
    ttft_ms: float | None,
    tpot_ms: float | None,
    e2e_ms: float | None,
    want: tuple[bool, bool, bool, bool],
) -> None:
    j = sla.judge(ttft_ms, tpot_ms, e2e_ms, "ok")
    assert (j.ttft, j.itl, j.e2e, j.met) == want


@pytest.mark.parametrize("outcome", ["rejected", "error", "failed", "cancelled"])
@pytest.mark.parametrize(
    ("ttft_ms", "tpot_ms", "e2e_ms"), [(100.0, 10.0, 200.0), (None, None, None), (None, None, 1.0)]
)
@pytest.mark.parametrize("sla", [SLA, E2E])
def test_anything_but_ok_misses_every_target_itl_included(
    sla: TenantSLA, outcome: str, ttft_ms: float | None, tpot_ms: float | None, e2e_ms: float | None
) -> None:
    """Even with in-target numbers (a failure after a fast first token): a refusal or
    failure is a miss on every label, so dropping load never raises any attainment."""
    assert sla.judge(ttft_ms, tpot_ms, e2e_ms, outcome) == NO


def test_met_is_all_three() -> None:
    for ttft in (100.0, 600.0):
        for tpot in (10.0, 30.0):
            for e2e in (900.0, 1100.0):
                j = E2E.judge(ttft, tpot, e2e, "ok")
                assert j.met is (j.ttft and j.itl and j.e2e)
