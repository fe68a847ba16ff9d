"""Online calibration of latency predictions against measured outcomes.

The profile predictor can be wrong (another GPU, another vLLM version, a noisy
neighbour). The controller learns the log-ratio ``ln(measured / predicted)`` as a
linear function of a few features with scikit-learn, on a sliding window so it
follows drift, and multiplies later predictions by ``exp`` of it. The spread of
the remaining residuals (``sigma``, log space) is the prediction uncertainty that
``breach.py`` turns into miss probabilities.

Methods: ``huber`` (default) refits a Huber M-estimate (iteratively reweighted
ridge) on the window every ``refit_every`` points, so a few queueing outliers (a
request that waited behind a burst) do not drag the correction away from the typical
request; ``ridge`` is the plain least-squares refit; ``sgd`` does
``SGDRegressor.partial_fit`` per point (cheaper per update, slower to converge). All
are deterministic for replay (no randomness, fixed seed, no shuffle).
Calibrate against what the *base* predictor said: predictions that were already
calibrated must have the factor divided out before ``observe``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.predictor import ItlQuery, LatencyPredictor, TtftQuery
from controlplane.schemas import WorkerSnapshot


class CalibrationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Literal["huber", "ridge", "sgd"] = "huber"
    window: int = Field(default=2000, ge=10)
    refit_every: int = Field(default=100, ge=1)
    min_points: int = Field(default=20, ge=2)
    max_factor: float = Field(default=8.0, gt=1, description="clamp of the correction factor")
    prior_sigma: float = Field(default=0.35, gt=0, description="log-space spread before data")
    min_sigma: float = Field(default=0.05, gt=0)


_CENTER = math.log(100.0)


def _log_ms(v: float) -> float:
    """Centred log latency: keeps the intercept meaningful for SGD's small steps."""
    return math.log(max(v, 0.01)) - _CENTER


class ResidualCalibrator:
    """Learns ``ln(measured/predicted)`` from features ``[ln(predicted), *extra]``."""

    def __init__(self, params: CalibrationParams | None = None) -> None:
        self.p = params or CalibrationParams()
        self._x: deque[list[float]] = deque(maxlen=self.p.window)
        self._y: deque[float] = deque(maxlen=self.p.window)
        self._model: Any = None
        self._coef: list[float] = []
        self._intercept = 0.0
        self._since_fit = 0
        self.sigma = self.p.prior_sigma
        self.n = 0
        import sklearn.linear_model  # noqa: F401  # pay the import at start-up, not on a tick

    def observe(self, predicted_ms: float, measured_ms: float, extra: Sequence[float] = ()) -> None:
        if not (predicted_ms > 0 and measured_ms > 0):
            return
        x = [_log_ms(predicted_ms), *extra]
        y = math.log(measured_ms / predicted_ms)
        self._x.append(x)
        self._y.append(y)
        self.n += 1
        self._since_fit += 1
        if self.p.method == "sgd" and len(self._y) >= self.p.min_points:
            self._sgd_update(x, y)
        elif len(self._y) >= self.p.min_points and (
            self._model is None or self._since_fit >= self.p.refit_every
        ):  # first fit as soon as there is enough data, then every refit_every points
            self._refit()

    def _sgd_update(self, x: list[float], y: float) -> None:
        from sklearn.linear_model import SGDRegressor

        if self._model is None:
            self._model = SGDRegressor(
                loss="huber",
                epsilon=1.0,
                alpha=1e-5,
                learning_rate="constant",
                eta0=0.02,
                random_state=0,
            )
            self._model.partial_fit(np.asarray(self._x), np.asarray(self._y))
        else:
            self._model.partial_fit(np.asarray([x]), np.asarray([y]))
        self._freeze()
        if self._since_fit >= self.p.refit_every:
            self._update_sigma()

    def _refit(self) -> None:
        from sklearn.linear_model import Ridge

        x, y = np.asarray(self._x), np.asarray(self._y)
        w = np.ones(len(y))
        model = Ridge(alpha=1.0)
        # Huber M-estimate by iteratively reweighted least squares: a few weighted ridge
        # fits (~1 ms each) instead of HuberRegressor's L-BFGS (~100 ms per refit)
        for _ in range(4 if self.p.method == "huber" else 1):
            model.fit(x, y, sample_weight=w)
            r = y - model.predict(x)
            scale = 1.4826 * float(np.median(np.abs(r - np.median(r)))) + 1e-9
            w = np.minimum(1.0, 1.345 * scale / np.maximum(np.abs(r), 1e-12))
        self._model = model
        self._update_sigma()

    def _update_sigma(self) -> None:
        self._freeze()
        resid = np.asarray(self._y) - self._model.predict(np.asarray(self._x))
        self.sigma = max(self.p.min_sigma, float(np.std(resid)))
        self._since_fit = 0

    def _freeze(self) -> None:
        """Keep the fitted line as plain floats: a prediction is a dot product, not a
        scikit-learn call (~50 us each, and the tick asks thousands)."""
        self._coef = [float(c) for c in np.ravel(self._model.coef_)]
        self._intercept = float(np.ravel(self._model.intercept_)[0])

    def log_factor(self, predicted_ms: float, extra: Sequence[float] = ()) -> float:
        if self._model is None:
            return 0.0
        x = (_log_ms(predicted_ms), *extra)
        v = self._intercept + sum(c * xi for c, xi in zip(self._coef, x, strict=False))
        lim = math.log(self.p.max_factor)
        return min(lim, max(-lim, v))

    def factor(self, predicted_ms: float, extra: Sequence[float] = ()) -> float:
        return math.exp(self.log_factor(predicted_ms, extra))


def ttft_extra(prompt_tokens: float, cached_tokens: float) -> list[float]:
    return [math.log1p(max(0.0, prompt_tokens - cached_tokens))]


def itl_extra(batch: float) -> list[float]:
    return [math.log(max(1.0, batch))]


class CalibratedPredictor:
    """A ``LatencyPredictor`` = base prediction times a learned correction (same Protocol)."""

    def __init__(
        self,
        base: LatencyPredictor,
        ttft: ResidualCalibrator | None = None,
        itl: ResidualCalibrator | None = None,
    ) -> None:
        self.base = base
        self.ttft = ttft or ResidualCalibrator()
        self.itl = itl or ResidualCalibrator()

    def ttft_ms(self, q: TtftQuery) -> float:
        b = self.base.ttft_ms(q)
        return b * self.ttft.factor(b, ttft_extra(q.prompt_tokens, q.cached_tokens))

    def itl_ms(self, q: ItlQuery) -> float:
        b = self.base.itl_ms(q)
        return b * self.itl.factor(b, itl_extra(q.batch))

    def drain_ms(self, worker: WorkerSnapshot, queued_prompt_tokens: int) -> float:
        b = self.base.drain_ms(worker, queued_prompt_tokens)
        return b * self.ttft.factor(b, ttft_extra(queued_prompt_tokens, 0))
