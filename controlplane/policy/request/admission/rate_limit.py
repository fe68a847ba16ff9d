"""Per-tenant rate limits as token buckets: what to take, and a local fallback.

The live gateway executes ``bucket_specs`` atomically across replicas through
``Store.take_tokens`` (Lua in Redis); ``LocalBuckets`` applies the same arithmetic
(``buckets.take``) in-process when the store is unreachable
(fail open to local limits) and in the replay driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.request.admission.buckets import BucketResult, take
from controlplane.schemas import TenantSLA


class RateLimitParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    burst_s: float = Field(default=60.0, gt=0)
    """Bucket capacity in seconds of the limit: 60 = a full minute's allowance at once."""


@dataclass(frozen=True, slots=True)
class BucketSpec:
    kind: str  # "rpm" | "tpm"
    amount: float
    capacity: float
    refill_per_s: float


def estimate_tokens(prompt_tokens: int, max_tokens: int) -> int:
    """Tokens charged against tpm: prompt + the most the request may generate."""
    return max(0, prompt_tokens) + max(0, max_tokens)


def bucket_specs(
    sla: TenantSLA, tokens: int, params: RateLimitParams | None = None
) -> list[BucketSpec]:
    p = params or RateLimitParams()
    out: list[BucketSpec] = []
    rl = sla.rate_limit
    if rl.rpm:
        out.append(BucketSpec("rpm", 1.0, rl.rpm * p.burst_s / 60.0, rl.rpm / 60.0))
    if rl.tpm:
        out.append(BucketSpec("tpm", float(tokens), rl.tpm * p.burst_s / 60.0, rl.tpm / 60.0))
    return out


class LocalBuckets:
    """In-process buckets keyed by (tenant, kind), same arithmetic as the store's."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], tuple[float, int]] = {}

    def take(self, tenant: str, spec: BucketSpec, now_ms: int) -> BucketResult:
        tokens, ts = self._state.get((tenant, spec.kind), (None, None))
        res, tokens2, ts2 = take(tokens, ts, spec.amount, spec.capacity, spec.refill_per_s, now_ms)
        self._state[(tenant, spec.kind)] = (tokens2, ts2)
        return res


class LocalSlots:
    """In-process concurrency slots per tenant (fallback for ``Store.acquire_slot``)."""

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}

    def acquire(self, tenant: str, request_id: str, limit: int) -> bool:
        held = self._held.setdefault(tenant, set())
        if len(held) >= limit:
            return False
        held.add(request_id)
        return True

    def release(self, tenant: str, request_id: str) -> None:
        self._held.get(tenant, set()).discard(request_id)

    def count(self, tenant: str) -> int:
        return len(self._held.get(tenant, ()))
