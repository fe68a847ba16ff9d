"""Queue-depth scorer (``least_loaded``): fewest running + waiting requests wins.

load = max(running + waiting from telemetry, the driver's own in-flight count), so
a burst between two telemetry samples still spreads. Score = inverted min-max of load.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.request.routers.base import (
    invert_minmax,
    invert_minmax_array,
    invert_minmax_list,
)
from controlplane.policy.request.routers.columns import F64
from controlplane.policy.types import Candidates, RouteRequest


class QueueDepthParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    waiting_weight: float = Field(default=1.0, ge=0)
    """How much a waiting request counts relative to a running one."""


class QueueDepthScorer:
    type_name = "queue-depth-scorer"

    def __init__(self, name: str = "queue-depth", params: QueueDepthParams | None = None) -> None:
        self.name = name
        self.params = params or QueueDepthParams()

    def score(self, req: RouteRequest, workers: Candidates, now_s: float) -> dict[str, float]:
        ww = self.params.waiting_weight
        inflight = workers.view.inflight
        load = {
            w: max(s.running + ww * s.waiting, float(inflight.get(w, 0)))
            for w, s in workers.items_fast()
        }
        return invert_minmax(load)

    def score_list(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[float]:
        cols = workers.columns
        assert cols is not None
        ids = workers.ids()
        ww = self.params.waiting_weight
        rows = cols.rows(("queue-depth", ww), lambda s: s.running + ww * s.waiting)
        load: list[float] = list(cols.getter(ids)(rows))
        inflight = workers.view.inflight
        if inflight:
            get = inflight.get
            load = [
                fi if (fi := float(get(w, 0))) > x else x for x, w in zip(load, ids, strict=True)
            ]
        return invert_minmax_list(load)

    def score_columns(self, req: RouteRequest, workers: Candidates, now_s: float) -> F64:
        cols = workers.columns
        assert cols is not None
        ids = workers.ids()
        ww = self.params.waiting_weight

        def static() -> F64:
            ix = cols.idx(ids)
            load: F64 = cols.running[ix] + ww * cols.waiting[ix]
            return load

        load = cols.derived(("queue-depth", id(self)), ids, static)
        inflight = workers.view.inflight
        if inflight:
            load = np.maximum(load, cols.counter(inflight, ids))
        return invert_minmax_array(load)
