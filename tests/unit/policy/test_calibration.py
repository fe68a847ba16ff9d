"""Calibration: a profile that is wrong by a constant factor (or a power) is corrected
from measured outcomes; the residual spread shrinks; both methods work."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controlplane.policy.planner.calibration import (
    CalibratedPredictor,
    CalibrationParams,
    ResidualCalibrator,
    ttft_extra,
)
from controlplane.policy.predictor import ItlQuery, LatencyPredictor, ProfilePredictor, TtftQuery
from controlplane.profiles import CPU_TINY_FIXTURE
from tests.unit.controller.builders import worker


@pytest.mark.parametrize("method", ["ridge", "sgd"])
def test_constant_factor_is_learned(method: str) -> None:
    cal = ResidualCalibrator(CalibrationParams(method=method, refit_every=10))
    rng = np.random.default_rng(0)
    # SGD's intercept moves slowly (one small step per point): it needs more data
    for _ in range(400 if method == "ridge" else 1500):
        pred = float(rng.uniform(20, 2000))
        meas = 2.0 * pred * math.exp(rng.normal(0, 0.05))
        cal.observe(pred, meas, [])
    assert cal.factor(300.0) == pytest.approx(2.0, rel=0.1)
    assert cal.sigma < 0.15


def test_power_law_error_is_learned_across_sizes() -> None:
    cal = ResidualCalibrator()
    for i in range(300):
        pred = 10.0 + 5.0 * i
        cal.observe(pred, pred**1.1, [])
    for pred in (50.0, 500.0, 1400.0):
        assert pred * cal.factor(pred) == pytest.approx(pred**1.1, rel=0.05)


def test_no_data_means_no_correction_and_prior_sigma() -> None:
    cal = ResidualCalibrator(CalibrationParams(prior_sigma=0.4))
    assert cal.factor(100.0) == 1.0 and cal.sigma == 0.4
    cal.observe(0.0, 10.0)  # invalid points are ignored
    assert cal.n == 0


def test_correction_is_clamped() -> None:
    cal = ResidualCalibrator(CalibrationParams(max_factor=3.0))
    for i in range(50):
        cal.observe(10.0 + i, 1000.0 * (10.0 + i))
    assert cal.factor(20.0) == pytest.approx(3.0)


def test_calibrated_predictor_wraps_the_gateway_predictor() -> None:
    base = ProfilePredictor(CPU_TINY_FIXTURE)
    cp = CalibratedPredictor(base)
    assert isinstance(cp, LatencyPredictor)
    s = worker("p0", "prefill", waiting=2)
    q = TtftQuery(s, prompt_tokens=512, queued_prompt_tokens=1024)
    assert cp.ttft_ms(q) == base.ttft_ms(q)
    for _ in range(50):
        b = base.ttft_ms(q)
        cp.ttft.observe(b, 1.5 * b, ttft_extra(512, 0))
    assert cp.ttft_ms(q) == pytest.approx(1.5 * base.ttft_ms(q), rel=0.02)
    iq = ItlQuery(s, batch=4, context_tokens=600)
    assert cp.itl_ms(iq) == base.itl_ms(iq)
    assert cp.drain_ms(s, 1000) > 0
