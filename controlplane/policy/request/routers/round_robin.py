"""Round-robin scorer: 1 for the next worker in rotation, 0 for the rest.

Stateful but deterministic (a counter), so replay reproduces it exactly. The
rotation runs over whatever passed the filters, in id order.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from controlplane.policy.request.routers.columns import F64
from controlplane.policy.types import Candidates, RouteRequest


class RoundRobinParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoundRobinScorer:
    type_name = "round-robin-scorer"

    def __init__(self, name: str = "round-robin", params: RoundRobinParams | None = None) -> None:
        self.name = name
        self.params = params or RoundRobinParams()
        self._next = 0

    def score(self, req: RouteRequest, workers: Candidates, now_s: float) -> dict[str, float]:
        ids = workers.ids()
        if not ids:
            return {}
        pick = ids[self._next % len(ids)]
        self._next += 1
        return {pick: 1.0}

    def score_list(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[float]:
        out = [0.0] * len(workers)
        if out:
            out[self._next % len(out)] = 1.0
            self._next += 1
        return out

    def score_columns(self, req: RouteRequest, workers: Candidates, now_s: float) -> F64:
        out = np.zeros(len(workers))
        if len(out):
            out[self._next % len(out)] = 1.0
            self._next += 1
        return out
