"""Holt-Winters (additive, damped trend): level + trend + optional season.

Why damped: an undamped trend extrapolates a ramp forever, which makes a planner
overshoot at the top of a ramp; damping (phi < 1) lets the trend fade. With
``season_length`` 0 this is Holt's linear method. The season is initialised from
the first full season's deviations from its mean (numpy), as in the classic method.
"""

from __future__ import annotations

import numpy as np

from controlplane.policy.planner.load_predictors.base import LoadPredictorParams, SkipLeadingIdle


class HoltWintersPredictor:
    name = "holt_winters"

    def __init__(self, params: LoadPredictorParams | None = None) -> None:
        self.p = params or LoadPredictorParams()
        self._idle = SkipLeadingIdle()
        self._warm: list[float] = []
        self._level: float | None = None
        self._trend = 0.0
        self._season: np.ndarray[tuple[int], np.dtype[np.float64]] = np.zeros(
            max(1, self.p.season_length)
        )
        self._t = 0  # points consumed after initialisation

    def _init_from_warmup(self) -> None:
        m = self.p.season_length
        first = np.asarray(self._warm, dtype=np.float64)
        if m:
            self._season = first[:m] - first[:m].mean()
            self._level = float(first[:m].mean())
            rest = first[m:]
        else:
            self._level = float(first[0])
            rest = first[1:]
        self._warm.clear()
        for v in rest:
            self._update(float(v))

    def _update(self, v: float) -> None:
        assert self._level is not None
        a, b, g, phi, m = self.p.alpha, self.p.beta, self.p.gamma, self.p.phi, self.p.season_length
        s = float(self._season[self._t % m]) if m else 0.0
        prev_level = self._level
        self._level = a * (v - s) + (1 - a) * (prev_level + phi * self._trend)
        self._trend = b * (self._level - prev_level) + (1 - b) * phi * self._trend
        if m:
            self._season[self._t % m] = g * (v - self._level) + (1 - g) * s
        self._t += 1

    def add_data_point(self, value: float) -> None:
        v = self._idle.accept(value)
        if v is None:
            return
        if self._level is None:
            self._warm.append(v)
            if len(self._warm) >= max(1, self.p.season_length):
                self._init_from_warmup()
            return
        self._update(v)

    def predict_next(self) -> float:
        if self._level is None:
            return float(np.mean(self._warm)) if self._warm else 0.0
        m = self.p.season_length
        s = float(self._season[self._t % m]) if m else 0.0
        return max(0.0, self._level + self.p.phi * self._trend + s)
