"""Moving average and EWMA: damp Poisson noise in per-interval counts at the price of
lag after a step (a window of n intervals needs ~n/2 intervals to move halfway)."""

from __future__ import annotations

from collections import deque

from controlplane.policy.planner.load_predictors.base import LoadPredictorParams, SkipLeadingIdle


class MovingAveragePredictor:
    name = "moving_average"

    def __init__(self, params: LoadPredictorParams | None = None) -> None:
        p = params or LoadPredictorParams()
        self._idle = SkipLeadingIdle()
        self._buf: deque[float] = deque(maxlen=p.window)

    def add_data_point(self, value: float) -> None:
        v = self._idle.accept(value)
        if v is not None:
            self._buf.append(v)

    def predict_next(self) -> float:
        return sum(self._buf) / len(self._buf) if self._buf else 0.0


class EwmaPredictor:
    name = "ewma"

    def __init__(self, params: LoadPredictorParams | None = None) -> None:
        self._alpha = (params or LoadPredictorParams()).alpha
        self._idle = SkipLeadingIdle()
        self._level: float | None = None

    def add_data_point(self, value: float) -> None:
        v = self._idle.accept(value)
        if v is None:
            return
        self._level = v if self._level is None else self._level + self._alpha * (v - self._level)

    def predict_next(self) -> float:
        return self._level or 0.0
