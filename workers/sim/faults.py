"""Failure injection for fault tests: errors, added latency, hangs; changeable at runtime.

Set at startup from flags, then replaced by ``POST /sim/faults`` with a partial JSON
object (unset fields keep their value), read back with ``GET /sim/faults``.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Fraction of generation requests answered with an OpenAI-style 500."""
    added_latency_ms: float = Field(default=0.0, ge=0.0)
    """Wall-clock delay before a generation request is handled (not time-scaled)."""
    hang_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Fraction of generation requests that hang (see ``hang_mode``)."""
    hang_mode: Literal["before", "mid"] = "before"
    """``before``: accept and never answer; ``mid``: stall after ``hang_after_tokens``
    tokens (streams only; a non-stream request hangs before answering)."""
    hang_after_tokens: int = Field(default=1, ge=0)

    def merged(self, patch: dict[str, object]) -> Faults:
        """New Faults with ``patch`` applied; raises pydantic ValidationError if invalid."""
        return Faults.model_validate({**self.model_dump(), **patch})


class FaultDice:
    """Seeded draws so a fault test with ``--seed`` is reproducible."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def hit(self, rate: float) -> bool:
        return rate > 0.0 and (rate >= 1.0 or self._rng.random() < rate)
