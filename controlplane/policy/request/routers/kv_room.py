"""KV room filter: keep workers with KV space for prompt + max_tokens.

free = capacity x (1 - kv_usage) - tokens the driver already sent there since the
snapshot (approximated by in-flight x ``assumed_tokens_per_request``). With no
capacity in the snapshot, ``default_capacity_tokens`` is used; a worker above
``max_usage_ratio`` is full regardless.

With the column store, free space per worker is an array computed once per view
version; a request only compares it with its own need (and, when
``assumed_tokens_per_request`` > 0, subtracts the in-flight term).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.request.routers.columns import F64, LIST_MAX, Bool, pick_ids, pick_list
from controlplane.policy.types import Candidates, RouteRequest
from controlplane.schemas import WorkerSnapshot


class KvRoomParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default_capacity_tokens: int = Field(default=131_072, ge=1)
    max_usage_ratio: float = Field(default=0.97, gt=0, le=1)
    assumed_tokens_per_request: int = Field(default=0, ge=0)


class KvRoomFilter:
    type_name = "kv-room-filter"

    def __init__(self, name: str = "kv-room", params: KvRoomParams | None = None) -> None:
        self.name = name
        self.params = params or KvRoomParams()

    def filter(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[str]:
        cols = workers.columns
        if cols is None:
            return self.filter_slow(req, workers, now_s)
        p = self.params
        ids = workers.ids()
        if len(ids) < LIST_MAX:
            return self._filter_list(req, workers)

        def static() -> tuple[F64, dict[int, list[str]]]:
            ix = cols.idx(ids)
            kv = cols.kv[ix]
            free = cols.capacity(ix, p.default_capacity_tokens) * (1.0 - kv)
            free[kv >= p.max_usage_ratio] = -np.inf
            return free, {}

        free, by_need = cols.derived(("kv-room", id(self)), ids, static)
        need = req.prompt_tokens + req.max_tokens
        if p.assumed_tokens_per_request:
            infl = cols.counter(workers.view.inflight, ids)
            mask: Bool = free - infl * p.assumed_tokens_per_request >= need
            return pick_ids(ids, mask)
        out: list[str] | None = by_need.get(need)
        if out is None:
            if len(by_need) > 64:
                by_need.clear()
            out = by_need[need] = pick_ids(ids, free >= need)
        return out

    def _filter_list(self, req: RouteRequest, workers: Candidates) -> list[str]:
        """Free space per worker is a per-row term of the column store (once per
        snapshot); a request compares it with its need in one pass."""
        cols = workers.columns
        assert cols is not None
        p = self.params
        ids = workers.ids()
        key = ("kv-room-free", p.default_capacity_tokens, p.max_usage_ratio)
        free = cols.getter(ids)(cols.rows(key, lambda s: _free(s, p)))
        need = req.prompt_tokens + req.max_tokens
        if p.assumed_tokens_per_request:
            a = p.assumed_tokens_per_request
            infl = cols.counter_list(workers.view.inflight, ids)
            return pick_list(ids, [f - i * a >= need for f, i in zip(free, infl, strict=False)])
        return pick_list(ids, [f >= need for f in free])

    def filter_slow(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[str]:
        """Reference implementation over snapshots (no column store)."""
        p = self.params
        need = req.prompt_tokens + req.max_tokens
        inflight = workers.view.inflight
        out: list[str] = []
        for w, s in workers.items_fast():
            if s.kv_usage >= p.max_usage_ratio:
                continue
            cap = s.kv_capacity_tokens or p.default_capacity_tokens
            free = cap * (1.0 - s.kv_usage) - inflight.get(w, 0) * p.assumed_tokens_per_request
            if free >= need:
                out.append(w)
        return out


def _free(s: WorkerSnapshot, p: KvRoomParams) -> float:
    """capacity x (1 - kv_usage), -inf above ``max_usage_ratio`` (full regardless)."""
    if s.kv_usage >= p.max_usage_ratio:
        return -np.inf
    cap = s.kv_capacity_tokens
    return (cap if cap is not None and cap > 0 else p.default_capacity_tokens) * (1.0 - s.kv_usage)
