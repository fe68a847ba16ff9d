"""Displacement: when a newcomer would miss its TTFT behind a queue, refuse the largest
request queued ahead of it instead, if that alone lets the newcomer make it.

Why: goodput counts requests, not tokens. Refusing in arrival order (``hopeless``)
keeps whatever came first however large it is, so one 8k-token prompt at the head of
a burst can cost several 500-token requests behind it. The most jobs a single server
can finish by agreeable deadlines is found by Moore-Hodgson (Kise-Ibaraki-Mine with
release dates, the rule behind ``replay/capacity.py``'s bound): keep jobs in arrival
order and, when the newest would be late, drop the *largest* kept one. This is its
online form, restricted so that it never wastes work or trades up in priority:

- only requests that have not started (no prefill computed for them yet) are
  candidates, so no GPU time is thrown away;
- only requests of the same or lower priority than the newcomer;
- only requests with more uncached prompt tokens than the newcomer, so the kept set's
  total work shrinks and the room left over serves later arrivals too;
- only when removing that one request brings the newcomer's predicted TTFT within its
  target: otherwise nobody gains and the newcomer is refused as before.

The victim gets a 429 ``displaced`` with Retry-After, exactly like a ``hopeless``
refusal would have told it on arrival had the newcomer come first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class DisplaceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    min_size_ratio: float = Field(default=1.0, ge=1.0)
    """A victim must hold more than this many times the newcomer's uncached tokens
    (1 = any larger request; measured best in benchmarks/RESULTS.md)."""


@dataclass(frozen=True, slots=True)
class QueuedRequest:
    """A request dispatched to the newcomer's worker whose prefill has not started."""

    request_id: str
    rank: int
    """``Priority.rank`` of its tenant."""
    uncached_tokens: int


def pick_victim(
    params: DisplaceParams,
    *,
    rank: int,
    uncached_tokens: int,
    predicted_ttft_ms: float,
    target_ms: float,
    queued: Iterable[QueuedRequest],
    queue_ms_per_token: float,
) -> QueuedRequest | None:
    """The request to refuse in the newcomer's place, or None (refuse the newcomer).

    ``queue_ms_per_token``: how much sooner the newcomer starts per prompt token removed
    from the queue ahead of it (the predictor's busy drain rate, inverted)."""
    if not params.enabled or queue_ms_per_token <= 0.0:
        return None
    floor = uncached_tokens * params.min_size_ratio
    best: QueuedRequest | None = None
    for q in queued:
        if q.rank > rank or q.uncached_tokens <= floor:
            continue
        if best is None or q.uncached_tokens > best.uncached_tokens:
            best = q
    if best is None:
        return None
    if predicted_ttft_ms - best.uncached_tokens * queue_ms_per_token > target_ms:
        return None
    return best
