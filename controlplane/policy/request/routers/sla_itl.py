"""SLA decode scorer (``sla`` policy, decode and unified profiles).

Lowest predicted ITL / the request's ITL target at the batch the worker would have
with this request (telemetry running or the driver's in-flight count, whichever is
larger, plus one). Score = 1 / (1 + risk) with the miss penalty, as in ``sla.py``.
One prediction per distinct (model, batch) per request, because most workers share
both; ``score_columns`` spreads them with ``np.unique``, or, when every worker uses
the one default ``Profile``, interpolates all batches in one array call.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import repeat
from operator import attrgetter
from typing import Any

import numpy as np

from controlplane.policy.predictor import (
    ItlQuery,
    LatencyPredictor,
    ProfilePredictor,
    predicted_batch,
)
from controlplane.policy.request.routers.columns import F64
from controlplane.policy.request.routers.sla import SlaParams, risk_score, risk_score_array
from controlplane.policy.types import Candidates, RouteRequest
from controlplane.profiles import Profile

_running = attrgetter("running")


class DecodeSteps:
    """``Profile.decode_ms(batch, ctx)`` for integer batches with the table segment of
    each batch precomputed (same arithmetic, bit for bit): the list path asks it for
    every distinct batch of every request."""

    __slots__ = ("_prof", "_segs", "scale")

    def __init__(self, prof: Profile) -> None:
        self._prof = prof
        self.scale = prof.decode_scale
        self._segs: list[tuple[int, float, float] | None] = []
        """Per integer batch b: None when b is at or below the first table batch (the
        first row value), else (segment index i, b - x[i-1], x[i] - x[i-1])."""

    def _seg(self, b: int) -> tuple[int, float, float] | None:
        segs = self._segs
        while len(segs) <= b:
            x = float(len(segs))
            xs = self._prof.decode_batches
            if len(xs) == 1 or x <= xs[0]:
                segs.append(None)
                continue
            i = min(bisect_right(xs, x), len(xs) - 1)
            segs.append((i, x - xs[i - 1], xs[i] - xs[i - 1]))
        return segs[b]

    def segments(self, n: int) -> list[tuple[int, float, float] | None]:
        """The segment table, covering at least batches 0..n-1."""
        if len(self._segs) < n:
            self._seg(n - 1)
        return self._segs

    def row(self, ctx: float) -> list[float]:
        """The unscaled decode row at ``ctx`` (``Profile.decode_row``)."""
        return self._prof.decode_row(ctx)

    def ms(self, row: list[float], b: int) -> float:
        seg = self._segs[b] if b < len(self._segs) else self._seg(b)
        if seg is None:
            return self.scale * row[0]
        i, dx, span = seg
        y0 = row[i - 1]
        y = y0 + (row[i] - y0) * dx / span
        return self.scale * (y if y > 0.0 else 0.0)


_STEPS: dict[int, tuple[Profile, DecodeSteps]] = {}


def decode_steps(prof: Profile) -> DecodeSteps:
    hit = _STEPS.get(id(prof))
    if hit is not None and hit[0] is prof:
        return hit[1]
    if len(_STEPS) > 64:
        _STEPS.clear()
    steps = DecodeSteps(prof)
    _STEPS[id(prof)] = (prof, steps)
    return steps


class SlaItlScorer:
    type_name = "sla-itl-scorer"

    def __init__(
        self, name: str = "sla-itl", params: SlaParams | None = None, *, predictor: LatencyPredictor
    ) -> None:
        self.name = name
        self.params = params or SlaParams()
        self.predictor = predictor

    def score(self, req: RouteRequest, workers: Candidates, now_s: float) -> dict[str, float]:
        target = max(req.itl_target_ms, 1e-3)
        view = workers.view
        ctx = req.prompt_tokens + req.max_tokens // 2
        penalty = self.params.miss_penalty
        out: dict[str, float] = {}
        memo: dict[tuple[str, int], float] = {}  # same model and batch -> same prediction
        for w, s in workers.items_fast():
            batch = predicted_batch(s, view)
            key = (s.model, batch)
            sc = memo.get(key)
            if sc is None:
                itl = self.predictor.itl_ms(ItlQuery(worker=s, batch=batch, context_tokens=ctx))
                sc = memo[key] = risk_score(itl / target, penalty)
            out[w] = sc
        return out

    def score_list(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[float]:
        """``score`` in one loop over the candidates' running counts (a per-row term of
        the column store), one prediction per distinct batch."""
        cols = workers.columns
        assert cols is not None
        ids = workers.ids()
        running = cols.getter(ids)(cols.rows("running", _running))
        inflight = workers.view.inflight
        infl: Any = map(inflight.get, ids, repeat(0)) if inflight else repeat(0)
        target = max(req.itl_target_ms, 1e-3)
        ctx = req.prompt_tokens + req.max_tokens // 2
        penalty = self.params.miss_penalty
        pred = self.predictor
        out: list[float] = []
        append = out.append
        if type(pred) is ProfilePredictor and not pred.profiles:
            memo: dict[int, float] = {}
            prof = pred.default
            if isinstance(prof, Profile):
                steps = decode_steps(prof)
                row = steps.row(ctx)
                segs = steps.segments(max(running) + 2)
                first = row[0]
                scale = steps.scale
                for r, f in zip(running, infl, strict=False):
                    b = (f if f > r else r) + 1
                    sc = memo.get(b)
                    if sc is None:
                        seg = segs[b] if b < len(segs) else steps.segments(b + 1)[b]
                        if seg is None:
                            y = first
                        else:  # DecodeSteps.ms inlined
                            i, dx, span = seg
                            y0 = row[i - 1]
                            y = y0 + (row[i] - y0) * dx / span
                            if not y > 0.0:
                                y = 0.0
                        risk = scale * y / target
                        sc = memo[b] = 1.0 / (1.0 + (risk + penalty if risk > 1.0 else risk))
                    append(sc)
                return out
            decode_ms = prof.decode_ms
            for r, f in zip(running, infl, strict=False):
                b = (f if f > r else r) + 1
                sc = memo.get(b)
                if sc is None:
                    risk = decode_ms(b, ctx) / target
                    sc = memo[b] = 1.0 / (1.0 + (risk + penalty if risk > 1.0 else risk))
                append(sc)
            return out
        ws = workers.view.workers
        by_key: dict[tuple[str, int], float] = {}
        for w, r, f in zip(ids, running, infl, strict=False):
            s = ws[w]
            key = (s.model, (f if f > r else r) + 1)
            sc = by_key.get(key)
            if sc is None:
                itl = pred.itl_ms(ItlQuery(worker=s, batch=key[1], context_tokens=ctx))
                sc = by_key[key] = risk_score(itl / target, penalty)
            append(sc)
        return out

    def score_columns(self, req: RouteRequest, workers: Candidates, now_s: float) -> F64:
        """Same as ``score``: one prediction per distinct (model, batch), taken from
        the first candidate with that pair, spread with ``np.unique``."""
        cols = workers.columns
        assert cols is not None
        ids = workers.ids()
        ix = cols.idx(ids)
        inflight = workers.view.inflight
        running = cols.running[ix]
        batch = (np.maximum(running, cols.counter(inflight, ids)) if inflight else running) + 1
        target = max(req.itl_target_ms, 1e-3)
        ctx = req.prompt_tokens + req.max_tokens // 2
        penalty = self.params.miss_penalty
        pred = self.predictor
        if (
            type(pred) is ProfilePredictor
            and not pred.profiles
            and isinstance(pred.default, Profile)
        ):  # one table for everyone: every (model, batch) memo entry is the same value
            return risk_score_array(pred.default.decode_ms_many(batch, ctx) / target, penalty)
        key = cols.model[ix] * (int(batch.max()) + 1) + batch
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        ws = workers.view.workers
        firsts = first.tolist()
        many = None
        if type(pred) is ProfilePredictor:
            profs = {id(p): p for p in (pred.profile_for(ws[ids[i]]) for i in firsts)}
            prof = next(iter(profs.values()))
            if len(profs) == 1 and isinstance(prof, Profile):
                many = prof.decode_ms_many(batch[first], ctx)
        if many is not None:
            vals = risk_score_array(many / target, penalty)
        else:
            itls = [pred.itl_ms(ItlQuery(ws[ids[i]], int(batch[i]), ctx)) for i in firsts]
            vals = np.array([risk_score(itl / target, penalty) for itl in itls])
        out: F64 = vals[inverse.reshape(-1)]
        return out
