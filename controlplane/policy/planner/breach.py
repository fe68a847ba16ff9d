"""Per-tenant SLA breach probability over a horizon.

Two numbers per tenant and SLO (``ttft``, ``itl``, ``all``):

- miss probability of one request: the calibrated prediction is the median of a
  log-normal with the calibrator's residual spread ``sigma``, so
  ``P(latency > target) = 1 - Phi((ln target - ln predicted) / sigma)`` (for TTFT a
  mixture over the two paths when the gateways prefill some requests on decode
  workers: ``outlook.local_prefill_outlook``); blended with
  the recently observed miss ratio (exponentially decayed, so it fades once the
  cause is gone) in proportion to how much evidence each has;
- breach probability: the tenant's objective (e.g. 99 % of requests meet the SLA)
  is broken over the horizon when more than ``(1 - objective) x N`` of the ``N``
  expected requests miss; binomial with a normal approximation.

The second is what throttling and scaling act on: a 1 % miss rate is a breach for
a 99.9 % tenant and fine for a 95 % one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.planner.traffic import Outcome
from controlplane.policy.planner.types import TenantRisk
from controlplane.schemas import TenantSLA


class BreachParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    horizon_s: float = Field(default=30.0, gt=0)
    prior_strength: float = Field(
        default=30.0, ge=0, description="pseudo-requests of the prediction"
    )
    half_life_s: float = Field(default=10.0, gt=0, description="decay of observed outcomes")


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def miss_probability(predicted_ms: float, target_ms: float, sigma: float) -> float:
    if math.isinf(predicted_ms):
        return 1.0
    if predicted_ms <= 0:
        return 0.0
    return 1.0 - _phi((math.log(target_ms) - math.log(predicted_ms)) / max(sigma, 1e-6))


def objective_breach_probability(
    p_miss: float, expected_requests: float, objective: float
) -> float:
    """P(misses > (1 - objective) x N) for N ~ expected requests, misses ~ Bin(N, p)."""
    n = max(1.0, expected_requests)
    allowed = (1.0 - objective) * n
    mean, var = n * p_miss, n * p_miss * (1.0 - p_miss)
    if var <= 1e-12:
        return 1.0 if mean > allowed else 0.0
    return 1.0 - _phi((allowed + 0.5 - mean) / math.sqrt(var))


def observed_misses(
    outcomes: Iterable[Outcome], sla: TenantSLA, now_s: float, half_life_s: float
) -> tuple[float, dict[str, float]]:
    """(decayed request count, decayed misses per SLO), each request judged by
    ``TenantSLA.judge`` (no e2e here). This is the planner's signal, not the SLA
    accounting: a rejection, which ``judge`` (and the gateway's metric) counts as an ITL
    miss, is left out of ITL here because it decoded nothing; counting it made the
    planner add decode replicas for prefill-side shedding (which a GPU budget then took
    from prefill, shedding more). It still misses TTFT, and so ``all``."""
    n = 0.0
    miss = {"ttft": 0.0, "itl": 0.0, "all": 0.0}
    for o in outcomes:
        w = 0.5 ** (max(0.0, now_s - o.seen_s) / half_life_s)
        n += w
        j = sla.judge(
            o.ttft_ms, o.tpot_ms, None, "ok" if o.ok else "rejected" if o.rejected else "error"
        )
        t = not j.ttft
        i = not j.itl and not o.rejected
        miss["ttft"] += w * t
        miss["itl"] += w * i
        miss["all"] += w * (t or i)
    return n, miss


def tenant_risk(
    sla: TenantSLA,
    predicted_ttft_ms: float,
    predicted_itl_ms: float,
    sigma_ttft: float,
    sigma_itl: float,
    outcomes: Iterable[Outcome],
    rate_rps: float,
    now_s: float,
    params: BreachParams,
    local_share: float = 0.0,
    local_ttft_ms: float = 0.0,
) -> TenantRisk:
    """``predicted_ttft_ms`` is the P/D path's; ``local_share`` of the requests are
    expected to be prefilled on decode workers at ``local_ttft_ms`` instead."""
    p_t = miss_probability(predicted_ttft_ms, sla.ttft_ms, sigma_ttft)
    if local_share > 0.0:
        q = min(1.0, local_share)
        p_l = miss_probability(local_ttft_ms, sla.ttft_ms, sigma_ttft)
        p_t = p_l if q >= 1.0 else (1.0 - q) * p_t + q * p_l
        predicted_ttft_ms = (
            local_ttft_ms if q >= 1.0 else (1.0 - q) * predicted_ttft_ms + q * local_ttft_ms
        )
    p_i = miss_probability(predicted_itl_ms, sla.itl_ms, sigma_itl)
    pred = {"ttft": p_t, "itl": p_i, "all": 1.0 - (1.0 - p_t) * (1.0 - p_i)}
    n_obs, miss = observed_misses(outcomes, sla, now_s, params.half_life_s)
    k = params.prior_strength
    blended = {s: (k * pred[s] + miss[s]) / (k + n_obs) if k + n_obs > 0 else pred[s] for s in pred}
    expected = rate_rps * params.horizon_s
    # an idle tenant cannot breach: weight by P(at least one request in the horizon)
    active = 1.0 - math.exp(-expected)
    breach = {
        s: active * objective_breach_probability(p, expected, sla.objective)
        for s, p in blended.items()
    }
    return TenantRisk(
        tenant=sla.tenant,
        predicted_ttft_ms=predicted_ttft_ms,
        predicted_itl_ms=predicted_itl_ms,
        miss_probability=blended,
        breach_probability=breach,
        observed_miss_ratio=miss["all"] / n_obs if n_obs > 0 else None,
        expected_requests=expected,
    )
