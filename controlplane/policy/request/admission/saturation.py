"""Pool saturation detector (GIE's utilization detector).

saturation = mean over workers of max(waiting / queue_limit, kv_usage / kv_limit);
a worker that is down or whose telemetry is stale counts as fully saturated (1.0).
≥ 1 means the pool is saturated: the gateway may hold new requests in its queue.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.types import STATIC_SOURCE
from controlplane.schemas import WorkerSnapshot


class SaturationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    queue_limit: int = Field(default=16, ge=1)
    kv_limit_ratio: float = Field(default=0.9, gt=0, le=1)
    stale_after_s: float = Field(default=2.0, gt=0)


class UtilizationDetector:
    type_name = "utilization-detector"

    def __init__(self, name: str = "utilization", params: SaturationParams | None = None) -> None:
        self.name = name
        self.params = params or SaturationParams()

    def saturation(self, workers: Iterable[WorkerSnapshot], now_s: float) -> float:
        p = self.params
        stale_ms = (now_s - p.stale_after_s) * 1000.0
        total, n = 0.0, 0
        for s in workers:
            n += 1
            if not s.up or (s.source != STATIC_SOURCE and s.ts_ms < stale_ms):
                total += 1.0
                continue
            total += max(s.waiting / p.queue_limit, s.kv_usage / p.kv_limit_ratio)
        return total / n if n else 1.0
