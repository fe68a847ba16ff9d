"""SLA scorers (``sla``, the default policy).

Prefill: lowest predicted TTFT slack risk, risk = predicted TTFT / the request's
TTFT target (queue delay + uncached prefill, from the predictor; cached tokens
from the driver's prefix index). Decode: lowest predicted ITL / ITL target at the
batch the worker would have with this request. Score = 1 / (1 + risk): absolute,
so controller route weights scale it meaningfully and a worker that would miss
(risk > 1) always scores below one that would not when weights are equal.

``score_columns`` computes the same predictions as arrays: per view version the
reported queue and each worker's queue drain rate (``ProfilePredictor.queue_rate``),
per request only max(reported, pending) / rate plus one prefill term per distinct
profile (and per prefix-cache hit). Other predictors (e.g. a calibrated wrapper)
take the per-worker path, so any ``LatencyPredictor`` keeps working.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.predictor import (
    LatencyPredictor,
    ProfilePredictor,
    TtftQuery,
    queued_prompt_tokens,
)
from controlplane.policy.request.prefix import PrefixIndex
from controlplane.policy.request.routers.columns import F64, I64
from controlplane.policy.types import Candidates, RouteRequest
from controlplane.profiles import Profile
from controlplane.schemas import WorkerSnapshot


class SlaParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    block_tokens: int = Field(default=16, ge=1)
    assumed_prompt_tokens: int = Field(default=512, ge=1)
    miss_penalty: float = Field(default=1.0, ge=0)
    """Extra risk added once a prediction exceeds the target, to separate hits from misses."""


def risk_score(risk: float, penalty: float) -> float:
    """1 / (1 + risk), with the miss penalty added once the prediction exceeds the target."""
    if risk > 1.0:
        risk += penalty
    return 1.0 / (1.0 + risk)


def risk_score_array(risk: F64, penalty: float) -> F64:
    out: F64 = 1.0 / (1.0 + np.where(risk > 1.0, risk + penalty, risk))
    return out


_TtftStatic = tuple[list[Profile], I64, F64, I64]


class SlaTtftScorer:
    type_name = "sla-ttft-scorer"

    def __init__(
        self,
        name: str = "sla-ttft",
        params: SlaParams | None = None,
        *,
        predictor: LatencyPredictor,
        index: PrefixIndex | None = None,
    ) -> None:
        self.name = name
        self.params = params or SlaParams()
        self.predictor = predictor
        self.index = index

    def score(self, req: RouteRequest, workers: Candidates, now_s: float) -> dict[str, float]:
        p = self.params
        overlap = self.index.overlap(req.block_hashes) if self.index and req.block_hashes else {}
        target = max(req.ttft_target_ms, 1e-3)
        view = workers.view
        out: dict[str, float] = {}
        ttft_ms = self.predictor.ttft_ms
        for w, s in workers.items_fast():
            q = TtftQuery(
                worker=s,
                prompt_tokens=req.prompt_tokens,
                cached_tokens=min(req.prompt_tokens, overlap.get(w, 0) * p.block_tokens),
                queued_prompt_tokens=queued_prompt_tokens(s, view, p.assumed_prompt_tokens),
            )
            out[w] = risk_score(ttft_ms(q) / target, p.miss_penalty)
        return out

    def score_columns(self, req: RouteRequest, workers: Candidates, now_s: float) -> F64:
        pred = self.predictor
        cols = workers.columns
        if type(pred) is not ProfilePredictor or cols is None:
            sc = self.score(req, workers, now_s)
            return np.array([sc[w] for w in workers.ids()], np.float64)
        p = self.params
        ids = workers.ids()
        profs, pcode, rate, reported = cols.derived(
            ("sla-ttft", id(self)), ids, lambda: self._static(pred, workers)
        )
        pending = workers.view.pending_prefill_tokens
        queued = np.maximum(reported, cols.counter(pending, ids)) if pending else reported
        queue_ms = queued / rate  # reported >= 0, so 0 queued gives 0.0 as in _queue_ms
        prompt = req.prompt_tokens
        base = [pred.prefill_part_ms(pr, prompt, 0) for pr in profs]
        prefill: F64 = np.array(base)[pcode] if len(base) > 1 else np.full(len(ids), base[0])
        if self.index and req.block_hashes:
            depth = cols.scatter(self.index.overlap(req.block_hashes), ids)
            hit = np.flatnonzero(depth)
            if hit.size:
                cached = np.minimum(prompt, depth[hit] * p.block_tokens).tolist()
                codes = pcode[hit].tolist()
                memo: dict[tuple[int, int], float] = {}
                vals = []
                for c, k in zip(codes, cached, strict=True):
                    v = memo.get((c, k))
                    if v is None:
                        v = memo[(c, k)] = pred.prefill_part_ms(profs[c], prompt, k)
                    vals.append(v)
                prefill[hit] = vals
        risk = (queue_ms + prefill) / max(req.ttft_target_ms, 1e-3)
        return risk_score_array(risk, p.miss_penalty)

    def score_list(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[float]:
        """``score`` in one loop: each worker's reported queue is a per-row term of the
        column store (computed once per snapshot), the rest is per request."""
        pred = self.predictor
        cols = workers.columns
        ids = workers.ids()
        if type(pred) is not ProfilePredictor or cols is None:
            sc = self.score(req, workers, now_s)
            return [sc[w] for w in ids]
        p = self.params
        a = p.assumed_prompt_tokens
        reported = cols.getter(ids)(cols.rows(("sla-ttft-queue", a), lambda s: _reported(s, a)))
        pending = workers.view.pending_prefill_tokens
        pend: Any = map(pending.get, ids, repeat(0)) if pending else repeat(0)
        prompt = req.prompt_tokens
        target = max(req.ttft_target_ms, 1e-3)
        penalty = p.miss_penalty
        overlap = self.index.overlap(req.block_hashes) if self.index and req.block_hashes else {}
        bt = p.block_tokens
        out: list[float] = []
        append = out.append
        if not pred.profiles:  # one profile: one drain rate, one uncached prefill term
            prof = pred.default
            rate = pred.queue_rate(prof)
            base = pred.prefill_part_ms(prof, prompt, 0)
            if not overlap:
                for q, pd in zip(reported, pend, strict=False):
                    if pd > q:
                        q = pd
                    risk = (q / rate + base) / target
                    append(1.0 / (1.0 + (risk + penalty if risk > 1.0 else risk)))
                return out
            get = overlap.get
            by_depth = {0: base}  # prefill term per prefix depth (few distinct per request)
            for w, q, pd in zip(ids, reported, pend, strict=False):
                if pd > q:
                    q = pd
                d = get(w, 0)
                pf = by_depth.get(d)
                if pf is None:
                    pf = by_depth[d] = pred.prefill_part_ms(prof, prompt, min(prompt, d * bt))
                risk = (q / rate + pf) / target
                append(1.0 / (1.0 + (risk + penalty if risk > 1.0 else risk)))
            return out
        profs, pcode, rate_arr, _ = cols.derived(
            ("sla-ttft", id(self)), ids, lambda: self._static(pred, workers)
        )
        rates = rate_arr.tolist()
        bases = [pred.prefill_part_ms(pr, prompt, 0) for pr in profs]
        get = overlap.get
        for w, q, pd, c, rate in zip(ids, reported, pend, pcode.tolist(), rates, strict=False):
            if pd > q:
                q = pd
            d = get(w, 0)
            pf = pred.prefill_part_ms(profs[c], prompt, min(prompt, d * bt)) if d else bases[c]
            risk = (q / rate + pf) / target
            append(1.0 / (1.0 + (risk + penalty if risk > 1.0 else risk)))
        return out

    def _static(self, pred: ProfilePredictor, workers: Candidates) -> _TtftStatic:
        """Per version: each candidate's profile, queue drain rate and reported queue."""
        cols = workers.columns
        assert cols is not None
        ids = workers.ids()
        ix = cols.idx(ids)
        profs: list[Profile] = [pred.default]
        pcode = np.zeros(len(ids), np.int64)
        if pred.profiles:
            code = {id(pred.default): 0}
            ws = workers.view.workers
            for i, w in enumerate(ids):
                prof = pred.profile_for(ws[w])
                c = code.get(id(prof))
                if c is None:
                    c = code[id(prof)] = len(profs)
                    profs.append(prof)
                pcode[i] = c
        rate: F64 = np.array([pred.queue_rate(pr) for pr in profs])[pcode]
        wt = cols.wtok[ix]
        reported = np.where(wt >= 0, wt, cols.waiting[ix] * self.params.assumed_prompt_tokens)
        clipped: I64 = np.maximum(reported, 0)  # a negative queue predicts 0 ms, like 0
        return profs, pcode, rate, clipped


def _reported(s: WorkerSnapshot, assumed_prompt_tokens: int) -> int:
    """The worker's reported prompt-token queue, clipped at 0 (a negative queue
    predicts 0 ms, like an empty one)."""
    wt = s.waiting_tokens
    q = s.waiting * assumed_prompt_tokens if wt is None or wt < 0 else wt
    return q if q > 0 else 0
