"""Online calibration of the exported breach probability: labels only from outcomes the
controller can see one horizon (plus settle) later, identity until ``min_samples``,
monotone, shrunk towards the raw value, deterministic; actions keep the raw value."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from controlplane.policy.planner.breach_calibration import (
    BreachCalibrationParams,
    BreachCalibrator,
    record_met,
)
from controlplane.policy.planner.types import TenantRisk, TickInput
from controlplane.schemas import Priority, RequestRecord, TenantSLA
from tests.unit.controller.builders import TENANTS, planner, pool

H = 30.0
SLA = TenantSLA(tenant="t", priority=Priority.STANDARD, ttft_ms=1000, itl_ms=50, objective=0.9)
SLAS = {"t": SLA}


def risk(p: float) -> TenantRisk:
    probs = {"ttft": p, "itl": 0.0, "all": p}
    return TenantRisk("t", 100.0, 10.0, probs, probs)


def rec(i: int, arrival_s: float, met: bool) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", tenant="t", model="m", arrival_ms=int(arrival_s * 1000),
        outcome="ok", ttft_ms=100.0 if met else 5000.0, tpot_ms=10.0,
    )  # fmt: skip


def run(
    cal: BreachCalibrator,
    raw: Callable[[float], float],
    breached: Callable[[float], bool],
    ticks: int,
    tick_s: float = 5.0,
) -> list[TenantRisk]:
    """One tick every ``tick_s``; 2 requests a second, all met or (a breached second)
    all missed; records come back 1 s after arrival."""
    out: list[TenantRisk] = []
    n = 0
    for k in range(ticks):
        now = k * tick_s
        recs = []
        for j in range(int(2 * tick_s)):
            a = now - tick_s - 1.0 + j / 2.0
            if a > 0:
                recs.append(rec(n, a, not breached(a)))
                n += 1
        cal.observe(recs, SLAS)
        cal.label(now, SLAS)
        out.append(cal.calibrate(now, {"t": risk(raw(now))})["t"])
    return out


def params(**kw: float) -> BreachCalibrationParams:
    return BreachCalibrationParams.model_validate({"min_samples": 20, "refit_every": 5, **kw})


class TestCalibrator:
    def test_identity_until_min_samples(self) -> None:
        cal = BreachCalibrator(params(min_samples=1000), H)
        out = run(cal, lambda t: 0.8, lambda t: False, 60)
        assert all(r.breach == 0.8 and r.raw_breach_probability is None for r in out)
        assert cal.labels("t") > 0

    def test_labels_wait_for_horizon_and_settle(self) -> None:
        # ticks at 0, 5, ..., 55 s; a tick is labelled once t + horizon + settle <= now
        cal = BreachCalibrator(params(settle_s=30.0), H)
        run(cal, lambda t: 0.5, lambda t: False, 12)
        assert cal.labels("t") == 0  # t <= -5: none
        no_settle = BreachCalibrator(params(settle_s=0.0), H)
        run(no_settle, lambda t: 0.5, lambda t: False, 12)
        assert no_settle.labels("t") == 6  # t <= 25

    def test_overconfident_calm_tenant_decays_towards_zero(self) -> None:
        cal = BreachCalibrator(params(prior_strength=10.0), H)
        out = run(cal, lambda t: 0.8, lambda t: False, 200)
        last = out[-1]
        assert last.raw_breach_probability is not None
        assert last.raw_breach_probability["all"] == 0.8
        n = cal.labels("t")
        assert last.breach == pytest.approx(10.0 * 0.8 / (n + 10.0))
        assert 0.0 < last.breach < 0.1

    def test_well_ranked_probabilities_keep_their_order(self) -> None:
        """Raw p high in the second half of each 200-s period, which is when it breaches."""

        def hot(t: float) -> bool:
            return t % 200 >= 100

        cal = BreachCalibrator(params(), H)
        out = run(cal, lambda t: 0.9 if hot(t + 15) else 0.3, hot, 240)
        late = [(r.breach, r.raw_breach_probability) for r in out[160:]]
        hi = [c for c, raw in late if raw is not None and raw["all"] == 0.9]
        lo = [c for c, raw in late if raw is not None and raw["all"] == 0.3]
        assert hi and lo
        assert min(hi) > max(lo)
        assert max(lo) < 0.3  # the calm half was over-confident

    def test_whole_sla_at_least_its_parts(self) -> None:
        """Each SLO has its own map: shrunk towards different raw values, ``all`` could
        come out below ``itl``; it is held at least at both."""
        cal = BreachCalibrator(params(), H)
        run(cal, lambda t: 0.1, lambda t: False, 100)
        probs = {"ttft": 0.1, "itl": 0.9, "all": 0.1}
        r = cal.calibrate(500.0, {"t": TenantRisk("t", 100.0, 10.0, probs, probs)})["t"]
        assert r.raw_breach_probability is not None
        assert r.breach_probability["all"] >= r.breach_probability["ttft"]
        assert r.breach_probability["all"] >= r.breach_probability["itl"]

    def test_deterministic(self) -> None:
        def go() -> list[float]:
            cal = BreachCalibrator(params(), H)
            return [r.breach for r in run(cal, lambda t: (t % 70) / 70, lambda t: t % 90 < 20, 150)]

        assert go() == go()

    def test_window_without_arrivals_is_not_labelled(self) -> None:
        cal = BreachCalibrator(params(settle_s=0.0), H)
        for k in range(30):  # predictions, no requests at all
            now = k * 5.0
            cal.observe([], SLAS)
            cal.label(now, SLAS)
            cal.calibrate(now, {"t": risk(0.5)})
        assert cal.labels("t") == 0


class TestRecordMet:
    def test_per_slo(self) -> None:
        base = {"request_id": "r", "tenant": "t", "model": "m", "arrival_ms": 0}
        ok = RequestRecord(**base, outcome="ok", ttft_ms=100.0, tpot_ms=10.0)
        slow_itl = RequestRecord(**base, outcome="ok", ttft_ms=100.0, tpot_ms=80.0)
        rejected = RequestRecord(**base, outcome="rejected")
        failed = RequestRecord(**base, outcome="error")
        gateway_says = RequestRecord(**base, outcome="ok", ttft_ms=100.0, sla_met=False)
        assert record_met(ok, SLA) == (True, True, True)
        assert record_met(slow_itl, SLA) == (True, False, False)
        # a rejection misses ITL too, as the gateway's sla_requests_total{slo="itl"} counts it
        assert record_met(rejected, SLA) == (False, False, False)
        assert record_met(failed, SLA) == (False, False, False)
        assert record_met(gateway_says, SLA)[2] is False


class TestPlanner:
    def test_exported_risks_are_calibrated_and_actions_are_not(self) -> None:
        """Same inputs, calibration on and off: identical admit/scale decisions; the
        exported breach probability differs once enough windows are labelled."""
        on = planner(breach_calibration={"min_samples": 5, "refit_every": 1, "settle_s": 0.0})
        off = planner(breach_calibration={"enabled": False})
        t0, n = 10_000.0, 0
        diff = False
        for i in range(150):
            now = t0 + i
            recs = [  # 20 req/s of gold, all met, behind long prefill queues
                RequestRecord(
                    request_id=f"r{n + j}",
                    tenant="gold",
                    model="m",
                    arrival_ms=int((now - 1.0 + j / 20) * 1000),
                    outcome="ok",
                    prompt_tokens=512,
                    output_tokens=64,
                    ttft_ms=300.0,
                    tpot_ms=10.0,
                )
                for j in range(20)
            ]
            n += 20
            ws = pool(now, waiting=50, waiting_tokens=40_000)
            inp = TickInput(now, ws, TENANTS, recs)
            a, b = on.on_tick(inp), off.on_tick(inp)
            assert a.admit == b.admit
            assert (a.scale.desired if a.scale else None) == (b.scale.desired if b.scale else None)
            ra, rb = a.risks["gold"], b.risks["gold"]
            assert rb.raw_breach_probability is None
            if ra.raw_breach_probability is not None:
                assert ra.raw_breach_probability["all"] == rb.breach_probability["all"]
                diff |= ra.breach != rb.breach
        assert diff
