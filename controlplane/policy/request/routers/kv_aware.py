"""KV-aware scorer (``kv_aware``): prefix affinity plus KV load, Dynamo's KV-router cost.

cost = overlap_weight x prefill_blocks + decode_blocks, where
  prefill_blocks = prompt blocks the worker does not already hold (longest prefix
                   match in the driver's ``PrefixIndex``), and
  decode_blocks  = blocks active on the worker (kv_usage x capacity, plus prompt
                   tokens the driver sent there that telemetry has not shown yet)
                   + this request's blocks.
Score = inverted min-max of cost. ``overlap_weight`` > 1 favours cache hits over
balance; 0 makes it a pure KV-load balancer.

``score_columns`` is the same cost over arrays: KV in use per worker is computed once
per view version; per request only pending tokens and prefix overlap are added.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.request.prefix import PrefixIndex
from controlplane.policy.request.routers.base import (
    invert_minmax,
    invert_minmax_array,
    invert_minmax_list,
)
from controlplane.policy.request.routers.columns import F64
from controlplane.policy.types import Candidates, RouteRequest


class KvAwareParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    overlap_weight: float = Field(default=1.0, ge=0)
    block_tokens: int = Field(default=16, ge=1)
    default_capacity_tokens: int = Field(default=131_072, ge=1)


class KvAwareScorer:
    type_name = "kv-aware-scorer"

    def __init__(
        self, name: str = "kv-aware", params: KvAwareParams | None = None, *, index: PrefixIndex
    ) -> None:
        self.name = name
        self.params = params or KvAwareParams()
        self.index = index

    def score(self, req: RouteRequest, workers: Candidates, now_s: float) -> dict[str, float]:
        p = self.params
        bt = p.block_tokens
        req_blocks = -(-req.prompt_tokens // bt)
        overlap = self.index.overlap(req.block_hashes) if req.block_hashes else {}
        pending = workers.view.pending_prefill_tokens
        cost: dict[str, float] = {}
        for w, s in workers.items_fast():
            cached = min(req_blocks, overlap.get(w, 0))
            prefill_blocks = req_blocks - cached
            cap = s.kv_capacity_tokens or p.default_capacity_tokens
            active = (s.kv_usage * cap + pending.get(w, 0)) / bt
            decode_blocks = active + req_blocks + -(-req.max_tokens // bt)
            cost[w] = p.overlap_weight * prefill_blocks + decode_blocks
        return invert_minmax(cost)

    def score_list(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[float]:
        cols = workers.columns
        assert cols is not None
        p = self.params
        bt = p.block_tokens
        ids = workers.ids()
        cap0 = p.default_capacity_tokens
        rows = cols.rows(
            ("kv-aware-used", cap0), lambda s: s.kv_usage * (s.kv_capacity_tokens or cap0)
        )
        used = cols.getter(ids)(rows)
        req_blocks = -(-req.prompt_tokens // bt)
        out_blocks = -(-req.max_tokens // bt)
        ow = p.overlap_weight
        get_o = self.index.overlap(req.block_hashes).get if req.block_hashes else None
        get_p = workers.view.pending_prefill_tokens.get
        cost: list[float] = []
        append = cost.append
        for w, u in zip(ids, used, strict=True):
            d = get_o(w, 0) if get_o is not None else 0
            cached = d if d < req_blocks else req_blocks
            active = (u + get_p(w, 0)) / bt
            append(ow * (req_blocks - cached) + (active + req_blocks + out_blocks))
        return invert_minmax_list(cost)

    def score_columns(self, req: RouteRequest, workers: Candidates, now_s: float) -> F64:
        cols = workers.columns
        assert cols is not None
        p = self.params
        bt = p.block_tokens
        ids = workers.ids()

        def static() -> F64:
            ix = cols.idx(ids)
            used: F64 = cols.kv[ix] * cols.capacity(ix, p.default_capacity_tokens)
            return used

        used = cols.derived(("kv-aware", id(self)), ids, static)
        req_blocks = -(-req.prompt_tokens // bt)
        cached = np.zeros(len(ids), np.int64)
        if req.block_hashes:
            depth = cols.scatter(self.index.overlap(req.block_hashes), ids)
            cached = np.minimum(req_blocks, depth)
        prefill_blocks = req_blocks - cached
        pending = workers.view.pending_prefill_tokens
        active = (used + cols.counter(pending, ids)) / bt if pending else used / bt
        decode_blocks = active + req_blocks + -(-req.max_tokens // bt)
        return invert_minmax_array(p.overlap_weight * prefill_blocks + decode_blocks)
