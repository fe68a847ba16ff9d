"""Priority protection: a lower class may not build a queue a higher class would miss in.

Workers serve in arrival order, so a batch request admitted because *its own*
8 s target is met still sits in front of every premium request that comes after
it. Rule: a request is admitted only while the queue it leaves behind on its
chosen first worker (its predicted TTFT = queue ahead + its own prefill) stays
under ``headroom_ratio`` x the tightest TTFT target of any *active* tenant of
strictly higher priority (``ActiveTargets``: arrived within ``active_window_s``).
The rest of that target is room for the higher-priority request's own prefill
and for its bursts. Premium has nobody above it and is never stopped here.

Not starving anyone: a request with nothing queued ahead of it is admitted even
when its own prefill alone exceeds the limit (waiting could not make it fit).
A stopped request is held in the driver's admission queue (``hold``): engines
serve in arrival order, so keeping their queues short and the rest at the gateway,
released best priority first, makes the gateway the priority scheduler the engines
are not, and a lower-class request still gets served, in time if its target allows,
instead of being dropped. Past ``max_held`` it is rejected with Retry-After = the
predicted time for the queue ahead to drain far enough. Measured in RESULTS.md
(``benchmarks/bench_priority.py``): with holding, a small headroom wins on every
class, since a short engine queue costs no throughput while the gateway feeds it.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.types import ADMIT, RouteRequest, Verdict


class ProtectParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    headroom_ratio: float = Field(default=0.2, gt=0, le=1)
    """Queue left behind must stay under this share of the higher class's TTFT target."""
    active_window_s: float = Field(default=30.0, gt=0)
    """A tenant counts as active for this long after its last arrival."""
    hold: bool = True
    """Hold a stopped request in the driver's admission queue (released best priority
    first as the queue ahead drains) instead of rejecting it at once."""
    max_held: int = Field(default=1024, ge=0)
    """Held requests beyond this many are rejected with Retry-After instead."""
    max_hold_s: float = Field(default=30.0, gt=0)
    """Longest a request is held; never past its own TTFT target."""
    min_retry_after_s: float = Field(default=0.5, ge=0)
    max_retry_after_s: float = Field(default=60.0, gt=0)


class ActiveTargets:
    """Tightest TTFT target per priority rank over tenants seen within the window.

    Drivers call ``observe`` on every arrival and pass ``by_rank`` into the
    admission context. The answer is cached until a tenant could expire or a new
    (tenant, rank, target) shows up, so a request costs a dict write, not a scan.
    """

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._last: dict[str, tuple[int, float, float]] = {}
        self._cache: dict[int, float] = {}
        self._valid_until_s = float("-inf")

    def observe(self, tenant: str, rank: int, ttft_target_ms: float, now_s: float) -> None:
        old = self._last.get(tenant)
        self._last[tenant] = (rank, ttft_target_ms, now_s)
        if old is None or old[:2] != (rank, ttft_target_ms) or old[2] + self.window_s < now_s:
            self._valid_until_s = float("-inf")  # the set of active targets may have changed

    def by_rank(self, now_s: float) -> Mapping[int, float]:
        if now_s <= self._valid_until_s:
            return self._cache
        cutoff = now_s - self.window_s
        out: dict[int, float] = {}
        oldest = float("inf")
        for t, (rank, target, last) in list(self._last.items()):
            if last < cutoff:
                del self._last[t]
                continue
            oldest = min(oldest, last)
            out[rank] = min(target, out.get(rank, float("inf")))
        self._cache = out
        self._valid_until_s = oldest + self.window_s
        return out


class PriorityProtector:
    type_name = "priority-protector"

    def __init__(self, name: str = "protect", params: ProtectParams | None = None) -> None:
        self.name = name
        self.params = params or ProtectParams()

    def decide(
        self,
        req: RouteRequest,
        predicted_ttft_ms: float | None,
        queue_ahead_ms: float,
        targets_by_rank: Mapping[int, float],
        waited_ms: float = 0.0,
    ) -> Verdict:
        """``waited_ms``: time this request has already been held (0 on arrival)."""
        p = self.params
        if not p.enabled or predicted_ttft_ms is None:
            return ADMIT
        rank = req.priority.rank
        above = [t for r, t in targets_by_rank.items() if r > rank]
        if not above:
            return ADMIT
        if waited_ms > 0.0 and waited_ms + predicted_ttft_ms > req.ttft_target_ms:
            # held too long to make its own target now: serving it would only take
            # capacity from requests that still can (it is not a servable-in-time drop)
            inputs = {"waited_ms": round(waited_ms, 3), "predicted_ttft_ms": predicted_ttft_ms}
            return Verdict(False, "queue_timeout", retry_after_s=p.min_retry_after_s, inputs=inputs)
        limit_ms = p.headroom_ratio * min(above)
        if predicted_ttft_ms <= limit_ms or queue_ahead_ms <= 0.0:
            return ADMIT
        retry = min(
            p.max_retry_after_s, max(p.min_retry_after_s, (predicted_ttft_ms - limit_ms) / 1000.0)
        )
        inputs = {
            "predicted_ttft_ms": round(predicted_ttft_ms, 3),
            "queue_ahead_ms": round(queue_ahead_ms, 3),
            "protected_limit_ms": round(limit_ms, 3),
        }
        return Verdict(False, "protect_higher_priority", retry_after_s=retry, inputs=inputs)
