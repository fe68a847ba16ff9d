"""Score load predictors on a series, one step ahead, so they can be compared on
real traces (benchmarks/bench_predictor_load.py) with one definition of error."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.policy.planner.load_predictors.base import LoadPredictor


@dataclass(frozen=True, slots=True)
class ForecastScore:
    name: str
    points: int
    mae: float
    rmse: float
    mape_pct: float
    """Mean absolute % error over points whose actual value is non-zero."""
    bias: float
    """Mean (forecast - actual): positive = over-provisioning tendency."""


def score_one_step(
    predictor: LoadPredictor, series: Sequence[float], warmup: int = 3
) -> ForecastScore:
    """Feed ``series`` point by point, forecasting each point before seeing it."""
    errs: list[float] = []
    pct: list[float] = []
    for i, actual in enumerate(series):
        if i >= warmup:
            f = predictor.predict_next()
            errs.append(f - actual)
            if actual > 0:
                pct.append(abs(f - actual) / actual)
        predictor.add_data_point(actual)
    n = len(errs)
    if n == 0:
        return ForecastScore(predictor.name, 0, math.nan, math.nan, math.nan, math.nan)
    return ForecastScore(
        name=predictor.name,
        points=n,
        mae=sum(abs(e) for e in errs) / n,
        rmse=math.sqrt(sum(e * e for e in errs) / n),
        mape_pct=100.0 * sum(pct) / len(pct) if pct else math.nan,
        bias=sum(errs) / n,
    )
