"""Replica arithmetic from a latency profile (no state; ``planner.py`` adds time).

Prefill: one worker serves ``mu = peak prefill tokens/s / uncached prompt tokens``
requests per second; the utilisation it may run at is the largest ``rho`` whose
M/D/1 queueing delay (times ``tail_factor`` for the upper percentiles) plus the
prefill itself fits the TTFT target, capped at ``max_utilization``.
Decode: the largest batch whose step time meets the tightest ITL target (bounded
by KV capacity and max_num_seqs) serves ``batch / (output tokens x step time)``
requests per second (Little's law).
Replica counts are fractional here; the planner rounds with hysteresis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.policy.predictor import prefill_tokens_per_ms
from controlplane.profiles import Profile


@dataclass(frozen=True, slots=True)
class EngineLimits:
    kv_capacity_tokens: int = 131_072
    max_num_seqs: int = 256


@dataclass(frozen=True, slots=True)
class RoleNeed:
    """Fractional replicas needed, with the numbers behind them (decision inputs)."""

    replicas: float
    per_replica_rps: float
    predicted_ms: float
    feasible: bool
    detail: str


def prefill_need(
    model: Profile,
    rate_rps: float,
    prompt_tokens: float,
    cached_ratio: float,
    ttft_target_ms: float,
    max_utilization: float = 0.85,
    tail_factor: float = 3.0,
) -> RoleNeed:
    uncached = max(1.0, prompt_tokens * (1.0 - min(max(cached_ratio, 0.0), 1.0)))
    cached = prompt_tokens - uncached
    service_ms = model.prefill_ms(uncached, cached)
    mu_per_ms = prefill_tokens_per_ms(model) / uncached  # peak rate
    slack_ms = ttft_target_ms - service_ms
    if slack_ms <= 0:
        rho, feasible = max_utilization, False
    else:  # rho / (2 mu (1 - rho)) x tail <= slack  →  rho <= a / (1 + a)
        a = 2.0 * mu_per_ms * slack_ms / tail_factor
        rho, feasible = min(max_utilization, a / (1.0 + a)), True
    per_rps = mu_per_ms * 1000.0 * rho
    return RoleNeed(
        replicas=rate_rps / per_rps if per_rps > 0 else 0.0,
        per_replica_rps=per_rps,
        predicted_ms=service_ms + rho / (2.0 * mu_per_ms * (1.0 - rho)),
        feasible=feasible,
        detail=f"uncached={uncached:.0f} service_ms={service_ms:.1f} rho={rho:.2f}",
    )


def decode_need(
    model: Profile,
    rate_rps: float,
    prompt_tokens: float,
    output_tokens: float,
    itl_target_ms: float,
    limits: EngineLimits = EngineLimits(),
    itl_headroom: float = 0.9,
) -> RoleNeed:
    osl = max(1.0, output_tokens)
    ctx = prompt_tokens + osl / 2.0
    cap = max(1, min(limits.max_num_seqs, int(limits.kv_capacity_tokens / (prompt_tokens + osl))))
    target = itl_target_ms * itl_headroom
    lo, hi, best = 1, cap, 1
    feasible = model.decode_ms(1, ctx) <= target
    while feasible and lo <= hi:
        mid = (lo + hi) // 2
        if model.decode_ms(mid, ctx) <= target:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    step_ms = model.decode_ms(best, ctx)
    per_rps = best / (osl * step_ms / 1000.0) if step_ms > 0 else 0.0
    return RoleNeed(
        replicas=rate_rps / per_rps if per_rps > 0 else 0.0,
        per_replica_rps=per_rps,
        predicted_ms=step_ms,
        feasible=feasible,
        detail=f"batch={best} step_ms={step_ms:.2f} ctx={ctx:.0f}",
    )


def apply_gpu_budget(
    desired: Mapping[str, int],
    gpus_per_replica: Mapping[str, int],
    budget_gpus: int | None,
    minimum: Mapping[str, int],
) -> tuple[dict[str, int], bool]:
    """Scale every role down proportionally until the total fits (never below its
    minimum). Returns the counts and whether the budget bound."""
    out = dict(desired)
    if budget_gpus is None:
        return out, False

    def total(c: Mapping[str, int]) -> int:
        return sum(n * gpus_per_replica.get(r, 1) for r, n in c.items())

    if total(out) <= budget_gpus:
        return out, False
    scale = budget_gpus / total(out)
    out = {r: max(minimum.get(r, 0), math.floor(n * scale)) for r, n in out.items()}
    # hand leftover GPUs back, largest shortfall first, while they fit
    for r in sorted(out, key=lambda r: out[r] - desired[r]):
        while out[r] < desired[r] and total(out) + gpus_per_replica.get(r, 1) <= budget_gpus:
            out[r] += 1
    return out, True
