"""Load predictors by name (house rule 3: a Protocol, a name → factory dict, params).

Compare them with ``evaluate.score_one_step``; the planner picks one by name.
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.policy.planner.load_predictors.base import LoadPredictor, LoadPredictorParams
from controlplane.policy.planner.load_predictors.constant import ConstantPredictor
from controlplane.policy.planner.load_predictors.holt_winters import HoltWintersPredictor
from controlplane.policy.planner.load_predictors.smoothing import (
    EwmaPredictor,
    MovingAveragePredictor,
)

LOAD_PREDICTORS: dict[str, Callable[[LoadPredictorParams], LoadPredictor]] = {
    "constant": ConstantPredictor,
    "moving_average": MovingAveragePredictor,
    "ewma": EwmaPredictor,
    "holt_winters": HoltWintersPredictor,
}


def make_load_predictor(name: str, params: LoadPredictorParams | None = None) -> LoadPredictor:
    try:
        factory = LOAD_PREDICTORS[name]
    except KeyError:
        raise ValueError(
            f"unknown load predictor {name!r}; known: {sorted(LOAD_PREDICTORS)}"
        ) from None
    return factory(params or LoadPredictorParams())


__all__ = ["LOAD_PREDICTORS", "LoadPredictor", "LoadPredictorParams", "make_load_predictor"]
