"""Load forecast for the planner: one named load predictor per series (request rate,
mean prompt and output tokens, cached ratio), fed once per planner interval."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.policy.planner.load_predictors import LoadPredictorParams, make_load_predictor
from controlplane.policy.planner.traffic import IntervalTotals


@dataclass(frozen=True, slots=True)
class Forecast:
    rate_rps: float
    prompt_tokens: float
    output_tokens: float
    cached_ratio: float


class LoadForecaster:
    """One load predictor per series (rate, prompt/output tokens, cached ratio)."""

    def __init__(self, name: str, params: LoadPredictorParams) -> None:
        self.rate = make_load_predictor(name, params)
        self.isl = make_load_predictor(name, params)
        self.osl = make_load_predictor(name, params)
        self.hit = make_load_predictor(name, params)
        self.points = 0

    def add(self, t: IntervalTotals) -> None:
        self.rate.add_data_point(t.rate_rps)
        if t.ok_requests > 0:
            self.isl.add_data_point(t.prompt_tokens / t.ok_requests)
            self.osl.add_data_point(t.output_tokens / t.ok_requests)
            self.hit.add_data_point(t.cached_tokens / t.prompt_tokens if t.prompt_tokens else 0.0)
        self.points += 1

    def forecast(self) -> Forecast:
        return Forecast(
            self.rate.predict_next(),
            self.isl.predict_next() or 512.0,
            self.osl.predict_next() or 128.0,
            min(1.0, self.hit.predict_next()),
        )
