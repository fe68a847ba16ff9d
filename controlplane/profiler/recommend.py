"""Recommendations from a measured profile for TTFT/ITL targets.

Uses the planner's own replica arithmetic (``controlplane.policy.planner.scale``: M/D/1
prefill utilisation within the TTFT target, largest decode batch within the ITL
target), so what ``slaplane profile`` recommends is what the controller would plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from controlplane.policy.planner.scale import EngineLimits, decode_need, prefill_need
from controlplane.profiles import Profile


@dataclass(frozen=True, slots=True)
class Recommendation:
    max_prompt_tokens_in_ttft: int
    decode_batch_limit: int
    decode_step_ms: float
    prefill_rps_per_worker: float
    decode_rps_per_worker: float
    prefill_workers: int
    decode_workers: int
    feasible: bool
    notes: str

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def recommend(
    prof: Profile,
    *,
    ttft_ms: float,
    itl_ms: float,
    prompt_tokens: float,
    output_tokens: float,
    rate_rps: float,
) -> Recommendation:
    limits = EngineLimits(prof.kv_capacity_tokens, prof.max_num_seqs)
    pf = prefill_need(prof, rate_rps, prompt_tokens, 0.0, ttft_ms)
    dc = decode_need(prof, rate_rps, prompt_tokens, output_tokens, itl_ms, limits)
    lo, hi = 1, prof.max_model_len
    while lo < hi:  # longest prompt whose bare prefill fits the TTFT target
        mid = (lo + hi + 1) // 2
        if prof.prefill_ms(mid) <= ttft_ms:
            lo = mid
        else:
            hi = mid - 1
    osl = max(1.0, output_tokens)
    batch = round(dc.per_replica_rps * osl * dc.predicted_ms / 1000.0)  # decode_need's batch
    return Recommendation(
        max_prompt_tokens_in_ttft=lo if prof.prefill_ms(lo) <= ttft_ms else 0,
        decode_batch_limit=batch,
        decode_step_ms=dc.predicted_ms,
        prefill_rps_per_worker=pf.per_replica_rps,
        decode_rps_per_worker=dc.per_replica_rps,
        prefill_workers=max(1, math.ceil(pf.replicas)),
        decode_workers=max(1, math.ceil(dc.replicas)),
        feasible=pf.feasible and dc.feasible,
        notes=f"prefill: {pf.detail}; decode: {dc.detail}",
    )
