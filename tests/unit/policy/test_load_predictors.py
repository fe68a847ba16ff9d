"""Load predictors: each against the same contract, then what each is for."""

from __future__ import annotations

import math

import pytest

from controlplane.policy.planner.load_predictors import (
    LOAD_PREDICTORS,
    LoadPredictor,
    LoadPredictorParams,
    make_load_predictor,
)
from controlplane.policy.planner.load_predictors.evaluate import score_one_step


@pytest.mark.parametrize("name", sorted(LOAD_PREDICTORS))
class TestContract:
    def test_empty_predicts_zero(self, name: str) -> None:
        assert make_load_predictor(name).predict_next() == 0.0

    def test_constant_series_is_predicted_exactly(self, name: str) -> None:
        p = make_load_predictor(name)
        for _ in range(30):
            p.add_data_point(7.0)
        assert p.predict_next() == pytest.approx(7.0, rel=1e-6)

    def test_leading_idle_zeros_are_skipped(self, name: str) -> None:
        p = make_load_predictor(name)
        for _ in range(10):
            p.add_data_point(0.0)
        for _ in range(3):
            p.add_data_point(10.0)
        assert p.predict_next() == pytest.approx(10.0, rel=0.05)

    def test_nan_and_negative_are_clamped(self, name: str) -> None:
        p = make_load_predictor(name)
        p.add_data_point(5.0)
        p.add_data_point(math.nan)
        p.add_data_point(-3.0)
        assert p.predict_next() >= 0.0

    def test_is_a_load_predictor(self, name: str) -> None:
        assert isinstance(make_load_predictor(name), LoadPredictor)


def test_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError, match="constant"):
        make_load_predictor("prophet")


def _step(n_before: int = 20, n_after: int = 20) -> list[float]:
    return [10.0] * n_before + [20.0] * n_after


def test_constant_follows_a_step_after_one_interval() -> None:
    p = make_load_predictor("constant")
    for v in _step(20, 1):
        p.add_data_point(v)
    assert p.predict_next() == 20.0


def test_moving_average_lags_a_step() -> None:
    p = make_load_predictor("moving_average", LoadPredictorParams(window=4))
    for v in _step(20, 2):
        p.add_data_point(v)
    assert p.predict_next() == pytest.approx(15.0)


def test_holt_winters_tracks_a_ramp_better_than_constant() -> None:
    ramp = [10.0 + 2.0 * i for i in range(40)]
    hw = score_one_step(make_load_predictor("holt_winters", LoadPredictorParams(phi=1.0)), ramp)
    const = score_one_step(make_load_predictor("constant"), ramp)
    assert hw.mae < const.mae


def test_holt_winters_learns_a_season() -> None:
    season = [10.0, 20.0, 30.0, 20.0]
    series = season * 30
    params = LoadPredictorParams(season_length=4, alpha=0.3, beta=0.05, gamma=0.3)
    hw = score_one_step(make_load_predictor("holt_winters", params), series, warmup=8)
    const = score_one_step(make_load_predictor("constant"), series, warmup=8)
    assert hw.mae < 0.2 * const.mae


def test_smoothing_beats_constant_on_noise() -> None:
    noisy = [10.0 + (3.0 if i % 2 else -3.0) for i in range(60)]
    ewma = score_one_step(make_load_predictor("ewma", LoadPredictorParams(alpha=0.2)), noisy)
    const = score_one_step(make_load_predictor("constant"), noisy)
    assert ewma.mae < const.mae
    assert const.mape_pct > 0 and ewma.points == 57


def test_score_of_short_series_is_nan() -> None:
    s = score_one_step(make_load_predictor("constant"), [1.0])
    assert s.points == 0 and math.isnan(s.mae)
