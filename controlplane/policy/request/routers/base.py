"""Router plugin contracts (Filter, Scorer) and the Profile runner.

A Profile runs filters → weighted scorers → pick, like GIE's scheduler profile.
Filters that would remove every candidate are skipped and the skip is recorded
(house rule 7). Scores are clamped to [0, 1], weighted, multiplied by the
controller's route weight, and ties are broken by rotation, so equally good idle
workers share load even before telemetry catches up.

Scorers may also offer ``score_columns`` (scores as an array aligned with the
candidates, from the Profile's ``ColumnStore``); the Profile then sums, weights and
picks with numpy, which is what keeps a decision over 1,000 workers well under a
millisecond. Both paths compute the same floating-point operations in the same
order, so they pick the same worker (tests/unit/policy/routers/test_columns.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from controlplane.policy.request.routers.columns import F64, LIST_MAX, ColumnStore
from controlplane.policy.types import Candidates, ClusterView, PickResult, RouteRequest

_EPS = 1e-9


@runtime_checkable
class Filter(Protocol):
    type_name: str
    name: str

    def filter(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[str]:
        """The ids that pass, in input order."""
        ...


@runtime_checkable
class Scorer(Protocol):
    type_name: str
    name: str

    def score(self, req: RouteRequest, workers: Candidates, now_s: float) -> dict[str, float]:
        """A score in [0, 1] per worker id; higher is better, missing = 0."""
        ...


class ColumnScorer(Protocol):
    def score_columns(self, req: RouteRequest, workers: Candidates, now_s: float) -> F64:
        """``score`` as an array aligned with ``workers.ids()``; needs ``workers.columns``."""
        ...


class ListScorer(Protocol):
    def score_list(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[float]:
        """``score`` as a list aligned with ``workers.ids()``; needs ``workers.columns``."""
        ...


def invert_minmax_array(costs: F64) -> F64:
    """``invert_minmax`` over an array (same arithmetic)."""
    if not costs.size:
        return costs
    lo, hi = costs.min(), costs.max()
    span = hi - lo
    if span <= _EPS:
        return np.ones(costs.size)
    result: F64 = 1.0 - (costs - lo) / span
    return result


class LazyScores(Mapping[str, float]):
    """A read-only id → score mapping over a list or an array aligned with ``ids``,
    built only if someone reads it (the pick itself never does)."""

    __slots__ = ("_ids", "_scores")

    def __init__(self, ids: list[str], scores: list[float] | F64) -> None:
        self._ids, self._scores = ids, scores

    def __getitem__(self, key: str) -> float:
        try:
            return float(self._scores[self._ids.index(key)])
        except ValueError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def invert_minmax_list(costs: list[float]) -> list[float]:
    """``invert_minmax`` over a list (same arithmetic)."""
    if not costs:
        return costs
    lo, hi = min(costs), max(costs)
    span = hi - lo
    if span <= _EPS:
        return [1.0] * len(costs)
    return [1.0 - (c - lo) / span for c in costs]


def _weighted(scores: list[float], weight: float) -> tuple[list[float], float | None]:
    """``weight`` x each score clamped to [0, 1] (the list path), with the max when it
    is already known: a weight of 1 and scores already in [0, 1] (the usual case) give
    the list itself, and its max spares the pick a second pass."""
    if weight == 1.0 and scores:
        hi = max(scores)
        if hi <= 1.0 and min(scores) >= 0.0:
            return scores, hi
    # weight x min(1, max(0, s)), spelled out (same as the builtins)
    return [weight * ((x if x < 1.0 else 1.0) if x > 0.0 else 0.0) for x in scores], None


def invert_minmax(costs: Mapping[str, float]) -> dict[str, float]:
    """Cost → score in [0, 1]: the cheapest gets 1, the dearest 0, all equal → all 1."""
    if not costs:
        return {}
    lo, hi = min(costs.values()), max(costs.values())
    span = hi - lo
    if span <= _EPS:
        return dict.fromkeys(costs, 1.0)
    return {w: 1.0 - (c - lo) / span for w, c in costs.items()}


class Profile:
    """Filters, then weighted scorers, then argmax with rotating tie-break."""

    def __init__(
        self,
        name: str,
        filters: Sequence[Filter] = (),
        scorers: Sequence[tuple[Scorer, float]] = (),
        columns: ColumnStore | None = None,
        columns_min: int = 16,
        list_max: int = LIST_MAX,
    ) -> None:
        self.name = name
        self.filters = list(filters)
        self.scorers = list(scorers)
        self.columns = columns if columns is not None else ColumnStore()
        """Shared by the Router's profiles; synced to the view on every pick."""
        self.columns_min = columns_min
        """Pools smaller than this take the per-worker path: numpy's fixed cost per call
        outweighs its per-worker saving below a few dozen workers."""
        self.list_max = list_max
        """Pools from ``columns_min`` up to this size take the list path (every scorer's
        ``score_list``: per-row terms from the column store, one Python loop per
        request); larger pools the numpy path."""
        self._listable = all(hasattr(s, "score_list") for s, _ in self.scorers)
        self._tie = 0

    def pick(
        self, req: RouteRequest, ids: list[str], view: ClusterView, now_s: float
    ) -> PickResult:
        if not ids:
            return PickResult(None, {}, (), f"{self.name}: no candidates")
        cols: ColumnStore | None = None
        if len(ids) >= self.columns_min:
            cols = self.columns
            cols.sync(view)
        cands = ids
        fallbacks: list[str] = []
        for f in self.filters:
            kept = f.filter(req, Candidates(cands, view, cols), now_s)
            if kept:
                cands = kept
            else:
                fallbacks.append(f"{self.name}/{f.name}:all_filtered")
        if cols is None:
            return self._pick_slow(req, ids, cands, view, now_s, fallbacks)
        if len(ids) < self.list_max and self._listable:
            return self._pick_list(req, ids, cands, view, cols, now_s, fallbacks)
        totals: F64 | None = None
        if self.scorers:
            cset = Candidates(cands, view, cols)
            for scorer, weight in self.scorers:
                fast = getattr(scorer, "score_columns", None)
                if fast is not None:
                    arr: F64 = fast(req, cset, now_s)
                else:
                    s = scorer.score(req, cset, now_s)
                    arr = np.array([s.get(w, 0.0) for w in cands], np.float64)
                term = weight * np.minimum(np.maximum(arr, 0.0), 1.0)
                totals = term if totals is None else totals + term
        if totals is None:
            totals = np.zeros(len(cands))
        if cols.has_rw:
            totals = totals * cols.rw[cols.idx(cands)]
        best = float(totals.max())
        tied = np.flatnonzero(totals >= best - _EPS)
        choice = cands[int(tied[self._tie % len(tied)])]
        self._tie += 1
        reason = f"{self.name}: best of {len(cands)}/{len(ids)} score={best:.4f} ties={len(tied)}"
        return PickResult(choice, LazyScores(cands, totals), tuple(fallbacks), reason)

    def _pick_list(
        self,
        req: RouteRequest,
        ids: list[str],
        cands: list[str],
        view: ClusterView,
        cols: ColumnStore,
        now_s: float,
        fallbacks: list[str],
    ) -> PickResult:
        """The list path (same arithmetic as the per-worker path, in plain Python)."""
        totals: list[float] | None = None
        known_max: float | None = None  # max(totals) when already known
        if self.scorers:
            cset = Candidates(cands, view, cols)
            for scorer, weight in self.scorers:
                arr: list[float] = scorer.score_list(req, cset, now_s)  # type: ignore[attr-defined]
                term, term_max = _weighted(arr, weight)
                if totals is None:
                    totals, known_max = term, term_max
                else:
                    totals = [a + b for a, b in zip(totals, term, strict=True)]
                    known_max = None
        if totals is None:
            totals = [0.0] * len(cands)
        rw = view.route_weights
        if rw:
            get = rw.get
            totals = [t * get(w, 1.0) for t, w in zip(totals, cands, strict=True)]
            known_max = None
        best = max(totals) if known_max is None else known_max
        floor = best - _EPS
        top = sorted(totals)  # C-level; the second best tells whether there is a tie
        if len(top) < 2 or not top[-2] >= floor:
            tied = [totals.index(best)]
        else:
            tied = [i for i, t in enumerate(totals) if t >= floor]
        choice = cands[tied[self._tie % len(tied)]]
        self._tie += 1
        reason = f"{self.name}: best of {len(cands)}/{len(ids)} score={best:.4f} ties={len(tied)}"
        return PickResult(choice, LazyScores(cands, totals), tuple(fallbacks), reason)

    def _pick_slow(
        self,
        req: RouteRequest,
        ids: list[str],
        cands: list[str],
        view: ClusterView,
        now_s: float,
        fallbacks: list[str],
    ) -> PickResult:
        """The per-worker path for small pools (same arithmetic as the array path)."""
        totals = dict.fromkeys(cands, 0.0)
        if self.scorers:
            cset = Candidates(cands, view)
            for scorer, weight in self.scorers:
                s = scorer.score(req, cset, now_s)
                for w in cands:
                    totals[w] += weight * min(1.0, max(0.0, s.get(w, 0.0)))
        rw = view.route_weights
        if rw:
            for w in cands:
                totals[w] *= rw.get(w, 1.0)
        best = max(totals.values())
        tied = [w for w in cands if totals[w] >= best - _EPS]
        choice = tied[self._tie % len(tied)]
        self._tie += 1
        reason = f"{self.name}: best of {len(cands)}/{len(ids)} score={best:.4f} ties={len(tied)}"
        return PickResult(choice, totals, tuple(fallbacks), reason)
