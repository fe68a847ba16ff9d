from __future__ import annotations

import pytest

from controlplane.replay.accounting import FAILED, OK, REJECTED, Outcome, summarise
from controlplane.schemas import Priority, TenantSLA

SLA = TenantSLA(tenant="a", ttft_ms=500, itl_ms=25)


def _o(i: int, tenant: str, status: str, met: bool, ttft: float | None = 0.1) -> Outcome:
    return Outcome(i, tenant, float(i), 100, 10, status=status, ttft_s=ttft, tpot_s=0.01, met=met)


def test_rejections_are_misses_and_goodput_is_attainment_times_rate() -> None:
    slas = {"a": SLA, "b": TenantSLA(tenant="b", priority=Priority.BATCH)}
    outs = [
        _o(0, "a", OK, True),
        _o(1, "a", OK, False),
        _o(2, "a", REJECTED, False, None),
        _o(3, "b", FAILED, False, None),
        _o(4, "b", OK, True),
    ]
    s = summarise("p", 1.0, outs, slas, gpu_seconds=8.0, sim_end_s=4.0, capacity_rps=0.5)
    assert s.offered == 5 and s.met == 2 and s.rejected == 1 and s.failed == 1
    assert s.attainment == pytest.approx(0.4)
    assert s.span_s == pytest.approx(4.0)
    assert s.goodput_rps == pytest.approx(s.attainment * s.offered_rps)
    assert s.mean_gpus == pytest.approx(2.0)
    assert s.goodput_per_gpu == pytest.approx(0.25)
    assert s.bound_rps == pytest.approx(0.5) and s.of_bound == pytest.approx(1.0)
    per = {t.tenant: t for t in s.tenants}
    assert per["a"].attainment == pytest.approx(1 / 3) and per["a"].rejected == 1
    assert per["b"].attainment == pytest.approx(0.5)
    assert s.ttft_ms["p50"] == pytest.approx(100.0)
    assert s.reject_reasons == {"failed": 1, "rejected": 1}
    doc = s.to_json()
    assert doc["tenants"][0]["objective_met"] is False
