"""Constant predictor: next = last. The baseline every other predictor must beat,
and the fastest to follow a step (one interval of delay, no smoothing lag)."""

from __future__ import annotations

from controlplane.policy.planner.load_predictors.base import LoadPredictorParams, SkipLeadingIdle


class ConstantPredictor:
    name = "constant"

    def __init__(self, params: LoadPredictorParams | None = None) -> None:
        self._idle = SkipLeadingIdle()
        self._last = 0.0

    def add_data_point(self, value: float) -> None:
        v = self._idle.accept(value)
        if v is not None:
            self._last = v

    def predict_next(self) -> float:
        return self._last
