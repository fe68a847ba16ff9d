"""What every load predictor implements, and the params they share.

A load predictor sees one number per planner interval (request rate, mean prompt
tokens, ...) and forecasts the next interval's value. Leading zeros are skipped, as
in the Dynamo planner: the idle minutes before traffic starts would otherwise drag
every smoother towards zero right when the first real load arrives.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class LoadPredictorParams(BaseModel):
    """Knobs of all predictors (each reads the ones it needs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    window: int = Field(default=6, ge=1, description="points in the moving average")
    alpha: float = Field(default=0.5, gt=0, le=1, description="level smoothing")
    beta: float = Field(default=0.2, ge=0, le=1, description="trend smoothing")
    gamma: float = Field(default=0.1, ge=0, le=1, description="seasonal smoothing")
    phi: float = Field(default=0.9, gt=0, le=1, description="trend damping (1 = none)")
    season_length: int = Field(default=0, ge=0, description="intervals per season; 0 = none")


@runtime_checkable
class LoadPredictor(Protocol):
    """One series in, one-step-ahead forecast out; no clock, no I/O."""

    name: str

    def add_data_point(self, value: float) -> None: ...
    def predict_next(self) -> float: ...


class SkipLeadingIdle:
    """Mixin-free helper: filters values so leading zeros (idle start) are dropped."""

    __slots__ = ("seen_nonzero",)

    def __init__(self) -> None:
        self.seen_nonzero = False

    def accept(self, value: float) -> float | None:
        """The value to record, or ``None`` to skip it."""
        if math.isnan(value) or math.isinf(value):
            value = 0.0
        value = max(0.0, value)
        if value == 0.0 and not self.seen_nonzero:
            return None
        self.seen_nonzero = True
        return value
