"""Token-bucket arithmetic: the rate-limit rule, owned by the policy.

The stores only persist it: ``state/memory.py`` calls ``take``, and the Lua script in
``state/redis_store.py`` is a line-by-line transcription of it (a test drives both with
the same sequence to keep them identical). ``LocalBuckets`` runs it in-process.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BucketResult:
    """Outcome of a token-bucket take: allowed, or how long until it would be."""

    allowed: bool
    remaining: float
    retry_after_s: float


def take(
    tokens: float | None,
    ts_ms: int | None,
    amount: float,
    capacity: float,
    refill_per_s: float,
    now_ms: int,
) -> tuple[BucketResult, float, int]:
    """Return the outcome and the bucket's new (tokens, ts_ms).

    A request larger than the whole bucket is allowed when the bucket is full, so
    a single oversized request is slowed, never starved forever.
    """
    if tokens is None or ts_ms is None:
        tokens, ts_ms = capacity, now_ms
    elapsed_s = max(0, now_ms - ts_ms) / 1000.0
    tokens = min(capacity, tokens + elapsed_s * refill_per_s)
    need = min(amount, capacity)
    if tokens >= need:
        tokens -= amount
        return BucketResult(True, tokens, 0.0), tokens, now_ms
    wait_s = (need - tokens) / refill_per_s if refill_per_s > 0 else float("inf")
    return BucketResult(False, tokens, wait_s), tokens, now_ms
