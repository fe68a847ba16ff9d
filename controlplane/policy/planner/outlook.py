"""Predicted TTFT/ITL per worker (now) and per pool (over a horizon).

Used by reroute (per worker, now), breach (per tenant, over the horizon) and the
planner. The horizon projection adds what the forecast arrival rate will do to the
queues: below saturation an M/D/1 mean wait (rho / 2(1 - rho) service times, why
queues build well before 100 % load), above it fluid growth (excess tokens per
second times the horizon).

Conditional disaggregation (``routers/local_prefill.py``): when the gateways may prefill
on a decode worker, ``local_prefill_outlook`` prices a tenant's TTFT as the router
splits it. Requests stay P/D while the P/D path's predicted TTFT is under the rule's
``risk_ratio`` x the target; beyond that the router sends them to a decode worker that
passes the rule's own guards (KV room, TPOT within ``itl_margin`` x the ITL target,
local TTFT within ``ttft_margin`` x the TTFT target). A decode worker's sustained local
prefill rate is its prefill rate times the duty cycle the TPOT guard allows
(``step / (1 - f) <= limit``). So: the P/D pool keeps the rate that holds it at the
risk threshold, the decode workers take the excess up to their spare rate, the rest
still queues on the prefill workers; the outlook reports both paths and the share that
goes local (``PoolOutlook.local_share``), and ``breach`` prices the mixture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controlplane.policy.planner.traffic import Shape
from controlplane.policy.predictor import ItlQuery, LatencyPredictor, TtftQuery
from controlplane.policy.request.routers.local_prefill import (
    POLICY_DEFAULT_MODE,
    LocalPrefillParams,
    kv_room,
)
from controlplane.schemas import WorkerSnapshot

_PROBE_TOKENS = 8192
MAX_BATCH = 1024


def serves_prefill(role: str) -> bool:
    return role in ("prefill", "both")


def serves_decode(role: str) -> bool:
    return role in ("decode", "both")


def is_stale(snap: WorkerSnapshot, now_s: float, stale_after_s: float) -> bool:
    """Telemetry older than ``stale_after_s`` (static workers have none and never are)."""
    return snap.source != "static" and snap.age_s(now_s) > stale_after_s


def queued_tokens(snap: WorkerSnapshot, shape: Shape) -> float:
    if snap.waiting_tokens is not None:
        return float(snap.waiting_tokens)
    return snap.waiting * shape.prompt_tokens


def prefill_capacity_tokens_per_ms(pred: LatencyPredictor, snap: WorkerSnapshot) -> float:
    """Queue drain rate as the (calibrated) predictor sees it."""
    return _PROBE_TOKENS / max(pred.drain_ms(snap, _PROBE_TOKENS), 1e-6)


def worker_ttft_ms(
    pred: LatencyPredictor, snap: WorkerSnapshot, shape: Shape, extra_queue_tokens: float = 0.0
) -> float:
    q = TtftQuery(
        worker=snap,
        prompt_tokens=round(shape.prompt_tokens),
        cached_tokens=round(shape.prompt_tokens * shape.cached_ratio),
        queued_prompt_tokens=round(queued_tokens(snap, shape) + extra_queue_tokens),
    )
    return pred.ttft_ms(q)


def worker_itl_ms(
    pred: LatencyPredictor, snap: WorkerSnapshot, shape: Shape, batch: float | None = None
) -> float:
    b = snap.running + 1 if batch is None else batch
    ctx = shape.prompt_tokens + shape.output_tokens / 2.0
    return pred.itl_ms(ItlQuery(worker=snap, batch=max(1, round(b)), context_tokens=round(ctx)))


@dataclass(frozen=True, slots=True)
class PoolOutlook:
    ttft_ms: float
    """TTFT of the P/D path (the prefill workers)."""
    itl_ms: float
    prefill_utilization: float
    decode_batch: float
    local_share: float = 0.0
    """Fraction of the requests the gateways' local prefill is expected to send to decode
    workers over the horizon (``local_prefill_outlook``; 0 = all P/D)."""
    local_ttft_ms: float = 0.0
    """Predicted TTFT of those requests."""

    @property
    def mean_ttft_ms(self) -> float:
        """Mean predicted TTFT over both paths."""
        q = self.local_share
        if q <= 0.0:
            return self.ttft_ms
        if q >= 1.0:
            return self.local_ttft_ms
        return (1.0 - q) * self.ttft_ms + q * self.local_ttft_ms


def _weighted(values: Mapping[str, float], weights: Mapping[str, float]) -> float:
    tot = sum(weights.get(w, 1.0) for w in values)
    if tot <= 0:
        return sum(values.values()) / len(values)
    return sum(v * weights.get(w, 1.0) for w, v in values.items()) / tot


def pool_outlook(
    pred: LatencyPredictor,
    workers: Mapping[str, WorkerSnapshot],
    prefill_ids: Sequence[str],
    decode_ids: Sequence[str],
    shape: Shape,
    arrival_rps: float,
    horizon_s: float,
    weights: Mapping[str, float] | None = None,
) -> PoolOutlook:
    """Mean predicted TTFT/ITL of ``shape`` over the eligible workers, ``horizon_s`` ahead."""
    weights = weights or {}
    inf = float("inf")
    ttft: dict[str, float] = {}
    util = 0.0
    if prefill_ids:
        lam_tok_per_ms = arrival_rps * shape.uncached_tokens / 1000.0 / len(prefill_ids)
        for w in prefill_ids:
            snap = workers[w]
            cap = prefill_capacity_tokens_per_ms(pred, snap)
            rho = lam_tok_per_ms / cap if cap > 0 else inf
            util = max(util, rho)
            r = min(rho, 0.99)
            mdl = r / (2.0 * (1.0 - r)) * shape.uncached_tokens
            growth = max(0.0, lam_tok_per_ms - cap) * horizon_s * 1000.0
            extra = max(0.0, mdl - queued_tokens(snap, shape)) + growth
            ttft[w] = worker_ttft_ms(pred, snap, shape, extra)
    itl: dict[str, float] = {}
    batch_max = 0.0
    if decode_ids:
        lam = arrival_rps / len(decode_ids)
        for w in decode_ids:
            snap = workers[w]
            batch = float(snap.running + 1)
            for _ in range(4):  # fixed point of Little's law: batch = rate x osl x itl
                step = worker_itl_ms(pred, snap, shape, batch)
                batch = min(
                    MAX_BATCH, max(snap.running + 1.0, lam * shape.output_tokens * step / 1000.0)
                )
            itl[w] = worker_itl_ms(pred, snap, shape, batch)
            batch_max = max(batch_max, batch)
    return PoolOutlook(
        ttft_ms=_weighted(ttft, weights) if ttft else inf,
        itl_ms=_weighted(itl, weights) if itl else inf,
        prefill_utilization=util,
        decode_batch=batch_max,
    )


# ---- conditional disaggregation (local prefill) -------------------------------------


def resolve_local_prefill(
    policy: str, router_params: Mapping[str, Mapping[str, object]] | None = None
) -> LocalPrefillParams:
    """The gateways' local-prefill params (``RouterConfig.params["local-prefill"]``) with
    the mode resolved the way ``registry.build_router`` does (unset = the policy's
    default, ``POLICY_DEFAULT_MODE``)."""
    raw = dict((router_params or {}).get("local-prefill") or {})
    p = LocalPrefillParams.model_validate(raw)
    if p.mode is None:
        p = p.model_copy(update={"mode": POLICY_DEFAULT_MODE.get(policy, "never")})
    return p


def local_prefill_enabled(params: LocalPrefillParams) -> bool:
    return params.mode is not None and params.mode != "never"


@dataclass(frozen=True, slots=True)
class LocalSpare:
    """What one decode worker can prefill locally for ``shape``, as the rule would judge it."""

    worker: str
    tokens_per_ms: float
    """Sustained local prefill rate: prefill rate x the duty cycle the TPOT guard allows."""
    ttft_ms: float
    """Local TTFT of one ``shape`` request now (its queued prompts + its own prefill)."""


def local_spare(
    pred: LatencyPredictor,
    snap: WorkerSnapshot,
    shape: Shape,
    params: LocalPrefillParams,
    ttft_target_ms: float,
    itl_target_ms: float,
) -> LocalSpare | None:
    """The spare local prefill capacity of one decode worker, or None when the rule
    would not prefill ``shape`` there. Same guards as ``LocalPrefill._predictive``: KV
    room for prompt + output under ``kv_max_usage``; TPOT of the decodes running there,
    both regimes, within ``itl_margin`` x ``itl_target_ms`` (sustained: step / (1 - f),
    so the duty cycle f is at most 1 - step / limit, capped at ``max_duty``; burst: the
    queued and new prompt spread over ``spread_tokens`` - 1 gaps, the shape's mean output
    when the rule learns it from traffic); local TTFT within ``ttft_margin`` x the
    target. ``threshold`` mode has no TPOT or TTFT guard: duty ``max_duty``."""
    p = params
    if not kv_room(snap, shape.prompt_tokens + shape.output_tokens, p):
        return None
    prompt = max(1, round(shape.prompt_tokens))
    cached = round(shape.prompt_tokens * shape.cached_ratio)
    queued = queued_tokens(snap, shape)
    queue_ms = pred.drain_ms(snap, round(queued)) if queued > 0 else 0.0
    this_ms = pred.ttft_ms(TtftQuery(worker=snap, prompt_tokens=prompt, cached_tokens=cached))
    ttft = queue_ms + this_ms
    duty = p.max_duty
    if p.mode == "predictive":
        if ttft >= p.ttft_margin * ttft_target_ms:
            return None
        step = worker_itl_ms(pred, snap, shape)
        limit = p.itl_margin * itl_target_ms
        spread = p.spread_tokens or max(2, round(shape.output_tokens))
        if step + ttft / (spread - 1) > limit:
            return None
        duty = min(duty, 1.0 - step / limit)
    cap = prefill_capacity_tokens_per_ms(pred, snap)
    if duty <= 0.0 or cap <= 0.0:
        return None
    return LocalSpare(snap.worker, duty * cap, ttft)


def pd_safe_rate(
    pred: LatencyPredictor,
    workers: Mapping[str, WorkerSnapshot],
    prefill_ids: Sequence[str],
    shape: Shape,
    limit_ms: float,
) -> float:
    """Prompt tokens per ms the prefill workers take while their horizon TTFT stays
    within ``limit_ms``: per worker the M/D/1 utilisation whose mean wait fits in the
    headroom left by its queue (TTFT taken as linear in the queued tokens)."""
    u = max(shape.uncached_tokens, 1.0)
    total = 0.0
    for w in prefill_ids:
        snap = workers[w]
        cap = prefill_capacity_tokens_per_ms(pred, snap)
        head = (limit_ms - worker_ttft_ms(pred, snap, shape)) * cap
        if head <= 0.0 or cap <= 0.0:
            continue
        a = (queued_tokens(snap, shape) + head) / u  # mean wait allowed, in prompts
        total += 2.0 * a / (1.0 + 2.0 * a) * cap  # rho / (2 (1 - rho)) <= a
    return total


def local_prefill_outlook(
    pred: LatencyPredictor,
    workers: Mapping[str, WorkerSnapshot],
    prefill_ids: Sequence[str],
    decode_ids: Sequence[str],
    shape: Shape,
    arrival_rps: float,
    horizon_s: float,
    params: LocalPrefillParams,
    ttft_target_ms: float,
    itl_target_ms: float,
    weights: Mapping[str, float] | None = None,
) -> PoolOutlook:
    """TTFT outlook of ``shape`` when the gateways may prefill on ``decode_ids`` (module
    docstring). Without local prefill, or while P/D is predicted safe, or with no decode
    worker that passes the rule's guards, it is ``pool_outlook`` on the prefill workers.
    ``threshold`` mode is approximated with the same split: P/D keeps the rate below
    ``max_prefill_queue_size`` queued requests (none when the prompt is short enough to
    always go local) and decode workers take the rest up to ``max_duty`` of their rate
    (the rule has no guard: past that, their decodes slow instead)."""
    pd = pool_outlook(pred, workers, prefill_ids, [], shape, arrival_rps, horizon_s, weights)
    u = shape.uncached_tokens
    if not local_prefill_enabled(params) or not decode_ids or arrival_rps <= 0 or u <= 0:
        return pd
    lam = arrival_rps * u / 1000.0  # prompt tokens per ms
    if params.mode == "predictive":
        risk_ms = params.risk_ratio * ttft_target_ms
        if pd.ttft_ms <= risk_ms:
            return pd
        safe = pd_safe_rate(pred, workers, prefill_ids, shape, risk_ms)
    elif u <= params.max_local_prefill_length:
        safe = 0.0  # threshold: short prompts always go local
    elif params.max_prefill_queue_size is not None:
        # threshold: local once the pool's mean queue reaches max_prefill_queue_size
        a = params.max_prefill_queue_size / max(1, len(prefill_ids))
        caps = (prefill_capacity_tokens_per_ms(pred, workers[w]) for w in prefill_ids)
        safe = 2.0 * a / (1.0 + 2.0 * a) * sum(caps)
    else:
        return pd
    spares = [
        sp
        for w in decode_ids
        if (sp := local_spare(pred, workers[w], shape, params, ttft_target_ms, itl_target_ms))
        is not None
    ]
    spare = sum(sp.tokens_per_ms for sp in spares)
    lam_local = min(spare, max(0.0, lam - safe))
    if lam_local <= 0.0:
        return pd
    share = min(1.0, lam_local / lam)
    rest = pool_outlook(
        pred, workers, prefill_ids, [], shape, arrival_rps * (1.0 - share), horizon_s, weights
    )
    r = min(lam_local / spare, 0.99)
    wait = r / (2.0 * (1.0 - r)) * u  # M/D/1 mean wait in tokens, at each worker's rate
    local = sum(sp.tokens_per_ms * sp.ttft_ms + wait for sp in spares) / spare
    if params.mode == "predictive":  # the rule sends nothing local beyond this
        local = min(local, params.ttft_margin * ttft_target_ms)
    return PoolOutlook(
        ttft_ms=rest.ttft_ms,
        itl_ms=rest.itl_ms,
        prefill_utilization=rest.prefill_utilization,
        decode_batch=rest.decode_batch,
        local_share=share,
        local_ttft_ms=local,
    )
