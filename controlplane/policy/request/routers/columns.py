"""The view's per-worker numbers as numpy columns, refreshed once per view version.

Why: requests arrive at hundreds per second, but snapshots, route weights, drains
and breakers change only when telemetry or control arrives (a few Hz per worker).
Re-reading every snapshot attribute per request was most of the routing time at
1,000 workers, so a ``ColumnStore`` keeps one row per worker, rewrites only the rows
whose snapshot object changed when ``ClusterView.version`` moves, and plugins
compute their per-worker terms as array operations (memoised per version and
candidate list with ``derived``). The driver's per-request counters (in-flight,
pending prefill tokens) are read into arrays per request. A view with
``version=None`` is fully re-read on every call, so results never depend on caching.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import compress, repeat
from operator import is_not, itemgetter
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from controlplane.policy.types import STATIC_SOURCE, ClusterView
from controlplane.schemas import WorkerSnapshot

T = TypeVar("T")
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

_MAX_LISTS = 512

LIST_MAX = 128
"""Candidate lists shorter than this take the plain-Python list path (``score_list``):
numpy's ~1 us per call costs more than a tight loop over a few dozen workers."""

Gather = Callable[[Sequence[Any]], Sequence[Any]]


_ARRAYS: tuple[tuple[str, Any], ...] = (
    ("up", np.bool_),
    ("static", np.bool_),
    ("kv", np.float64),
    ("cap", np.float64),
    ("running", np.int64),
    ("waiting", np.int64),
    ("wtok", np.int64),
    ("ts", np.float64),
    ("model", np.int64),
    ("wver", np.int64),
)


class ColumnStore:
    """One row per worker ever seen; ``sync`` brings the rows to a view's version.

    Rows are written as Python values (the snapshot, ``wver`` and every ``rows``
    term); the numpy columns (``up``, ``kv``, ``ts``, ...) are brought up to date
    lazily, in one vectorised write per column, the first time one is read after
    a change: the list path for small pools never reads them."""

    def __init__(self) -> None:
        self.slot: dict[str, int] = {}
        self._snaps: list[WorkerSnapshot | None] = []
        self._models: dict[str, int] = {}
        self._a: dict[str, npt.NDArray[Any]] = {n: np.zeros(0, t) for n, t in _ARRAYS}
        self._dirty: set[int] = set()
        self.wver_list: list[int] = []
        """Per row: the refresh that last rewrote it (``wver`` as a list)."""
        self.ctl_ok: Bool = np.zeros(0, np.bool_)
        """Not draining, not unavailable, route weight > 0."""
        self.rw: F64 = np.zeros(0)
        self.has_rw = False
        self.syncs = 0
        """Number of refreshes; ``wver[i]`` is the refresh that last rewrote row i."""
        self.epoch = 0
        """Bumped when anything but load and fresher timestamps changes (a worker added,
        ``up``/static flipped, a timestamp going back, drains/breakers/zero weights), so
        the health filter may keep its answer across versions while it holds."""
        self.health_memo: dict[tuple[int, int], Any] = {}
        self._key: tuple[int, object] | None = None
        self._workers_ref: object = None
        self._lists: dict[int, tuple[list[str], npt.NDArray[np.intp]]] = {}
        self._derived: dict[tuple[Any, int], tuple[list[str], Any]] = {}
        self._pos: dict[int, tuple[list[str], dict[str, int]]] = {}
        self._rowfns: dict[Any, tuple[Callable[[WorkerSnapshot], Any], list[Any]]] = {}
        self._getters: dict[int, tuple[list[str], Gather]] = {}
        self._wkeys: list[str] = []
        self._wvals: list[WorkerSnapshot] = []
        self._ctl: tuple[object, ...] | None = None

    def _col(self, name: str) -> npt.NDArray[Any]:
        if self._dirty:
            self._flush()
        return self._a[name]

    @property
    def up(self) -> Bool:
        return self._col("up")

    @property
    def static(self) -> Bool:
        return self._col("static")

    @property
    def kv(self) -> F64:
        return self._col("kv")

    @property
    def cap(self) -> F64:
        """``kv_capacity_tokens``; 0 = unknown (plugins substitute their default)."""
        return self._col("cap")

    @property
    def running(self) -> I64:
        return self._col("running")

    @property
    def waiting(self) -> I64:
        return self._col("waiting")

    @property
    def wtok(self) -> I64:
        """``waiting_tokens``; -1 = not reported."""
        return self._col("wtok")

    @property
    def ts(self) -> F64:
        return self._col("ts")

    @property
    def model(self) -> I64:
        return self._col("model")

    @property
    def wver(self) -> I64:
        return self._col("wver")

    def _flush(self) -> None:
        rows = sorted(self._dirty)
        self._dirty.clear()
        ss = [self._snaps[i] for i in rows]
        snaps: list[WorkerSnapshot] = [s for s in ss if s is not None]
        assert len(snaps) == len(rows)
        a, models = self._a, self._models
        a["up"][rows] = [s.up for s in snaps]
        a["static"][rows] = [s.source == STATIC_SOURCE for s in snaps]
        a["kv"][rows] = [s.kv_usage for s in snaps]
        a["cap"][rows] = [s.kv_capacity_tokens or 0 for s in snaps]
        a["running"][rows] = [s.running for s in snaps]
        a["waiting"][rows] = [s.waiting for s in snaps]
        a["wtok"][rows] = [-1 if s.waiting_tokens is None else s.waiting_tokens for s in snaps]
        a["ts"][rows] = [s.ts_ms for s in snaps]
        a["model"][rows] = [models.setdefault(s.model, len(models)) for s in snaps]
        a["wver"][rows] = [self.wver_list[i] for i in rows]

    @property
    def cached(self) -> bool:
        """True while the rows belong to a versioned view (memos may be reused)."""
        return self._key is not None

    def sync(self, view: ClusterView) -> None:
        ws = view.workers
        if view.version is not None:
            key = (view.version, id(ws))
            if key == self._key and self._workers_ref is ws:
                return
            self._key, self._workers_ref = key, ws
        else:
            self._key, self._workers_ref = None, None
            self.epoch += 1  # no promise from the driver: nothing carries over
        self._derived.clear()
        self.syncs += 1
        keys = list(ws)
        vals = list(ws.values())
        if keys == self._wkeys:  # same workers in the same order: rewrite changed objects
            for i in compress(range(len(vals)), map(is_not, vals, self._wvals)):
                self._write(self.slot[keys[i]], vals[i])
        else:
            slot, snaps = self.slot, self._snaps
            for w, s in zip(keys, vals, strict=True):
                j = slot.get(w)
                if j is None:
                    j = self._add(w)
                if snaps[j] is not s:
                    self._write(j, s)
        self._wkeys, self._wvals = keys, vals
        n = len(self._snaps)
        rws = view.route_weights
        ctl = (n, view.draining, view.unavailable, dict(rws) if rws else None)
        if ctl == self._ctl:  # control unchanged: ``ctl_ok``/``rw`` still hold
            return
        self._ctl = ctl
        slot = self.slot
        ok = np.ones(n, np.bool_)
        for w in view.draining:
            if w in slot:
                ok[slot[w]] = False
        for w in view.unavailable:
            if w in slot:
                ok[slot[w]] = False
        rw = np.ones(n)
        for w, x in rws.items():
            if w in slot:
                rw[slot[w]] = x
        self.has_rw = bool(rws)
        if self.has_rw:
            ok &= rw > 0.0
        if ok.shape != self.ctl_ok.shape or not np.array_equal(ok, self.ctl_ok):
            self.epoch += 1
        self.ctl_ok, self.rw = ok, rw

    def _add(self, w: str) -> int:
        i = len(self._snaps)
        self.slot[w] = i
        self._snaps.append(None)
        self.wver_list.append(0)
        for _, vals in self._rowfns.values():
            vals.append(None)
        a = self._a
        if i >= len(a["kv"]):
            size = max(16, 2 * len(a["kv"]))
            for name, old in list(a.items()):
                new = np.zeros(size, old.dtype)
                new[: len(old)] = old
                a[name] = new
        return i

    def _write(self, i: int, s: WorkerSnapshot) -> None:
        old = self._snaps[i]
        if (
            old is None
            or old.up != s.up
            or (old.source == STATIC_SOURCE) != (s.source == STATIC_SOURCE)
            or s.ts_ms < old.ts_ms
        ):
            self.epoch += 1
        self.wver_list[i] = self.syncs
        self._snaps[i] = s
        self._dirty.add(i)
        for fn, vals in self._rowfns.values():
            vals[i] = fn(s)

    def rows(self, key: Any, fn: Callable[[WorkerSnapshot], Any]) -> list[Any]:
        """``fn(snapshot)`` per row, kept up to date as rows are rewritten (so a
        per-worker term is computed once per snapshot, not per version or request).
        ``key`` names ``fn`` (the first ``fn`` registered under a key is kept); ``fn``
        must depend on the snapshot and fixed parameters only. Read it through
        ``getter``."""
        hit = self._rowfns.get(key)
        if hit is not None:
            return hit[1]
        vals = [None if s is None else fn(s) for s in self._snaps]
        self._rowfns[key] = (fn, vals)
        return vals

    def getter(self, ids: list[str]) -> Gather:
        """A C-level gather of ``ids``' rows from a per-row list (``rows``), as a tuple
        aligned with ``ids`` (memoised per list object, like ``idx``)."""
        hit = self._getters.get(id(ids))
        if hit is not None and hit[0] is ids:
            return hit[1]
        ix = [self.slot[w] for w in ids]
        g: Gather
        if len(ix) == 1:
            g = _one(ix[0])
        elif ix:
            g = itemgetter(*ix)
        else:
            g = _none
        if len(self._getters) >= _MAX_LISTS:
            self._getters.clear()
        self._getters[id(ids)] = (ids, g)
        return g

    def idx(self, ids: list[str]) -> npt.NDArray[np.intp]:
        """Row numbers of ``ids`` (memoised per list object: pools and filter outputs)."""
        hit = self._lists.get(id(ids))
        if hit is not None and hit[0] is ids:
            return hit[1]
        slot = self.slot
        out = np.fromiter((slot[w] for w in ids), np.intp, len(ids))
        if len(self._lists) >= _MAX_LISTS:
            self._lists.clear()
        self._lists[id(ids)] = (ids, out)  # holding ``ids`` keeps its id unique
        return out

    def derived(self, key: Any, ids: list[str], build: Callable[[], T]) -> T:
        """``build()`` memoised per (key, candidate list) until the next version."""
        if self._key is None:
            return build()
        k = (key, id(ids))
        hit = self._derived.get(k)
        if hit is not None and hit[0] is ids:
            value: T = hit[1]
            return value
        value = build()
        if len(self._derived) >= _MAX_LISTS:
            self._derived.clear()
        self._derived[k] = (ids, value)
        return value

    def position(self, ids: list[str]) -> dict[str, int]:
        """id → index in ``ids`` (memoised per list object, like ``idx``: it depends on
        the list only), to scatter sparse per-request terms such as prefix overlap."""
        hit = self._pos.get(id(ids))
        if hit is not None and hit[0] is ids:
            return hit[1]
        pos = {w: i for i, w in enumerate(ids)}
        if len(self._pos) >= _MAX_LISTS:
            self._pos.clear()
        self._pos[id(ids)] = (ids, pos)
        return pos

    def scatter(self, mapping: Mapping[str, int], ids: list[str]) -> I64:
        """A sparse per-request term (e.g. prefix overlap depth) per candidate; missing = 0."""
        out = np.zeros(len(ids), np.int64)
        if mapping:
            pos = self.position(ids)
            ii = np.fromiter((pos.get(w, -1) for w in mapping), np.intp, len(mapping))
            vals = np.fromiter(mapping.values(), np.int64, len(mapping))
            ok = ii >= 0
            out[ii[ok]] = vals[ok]
        return out

    @staticmethod
    def counter_list(mapping: Mapping[str, int], ids: list[str]) -> list[int]:
        """``counter`` as a list (the list path)."""
        if not mapping:
            return [0] * len(ids)
        return list(map(mapping.get, ids, repeat(0)))

    @staticmethod
    def counter(mapping: Mapping[str, int], ids: list[str]) -> I64:
        """A driver counter (in-flight, pending tokens) per candidate; missing = 0."""
        if not mapping:
            return np.zeros(len(ids), np.int64)
        get = mapping.get
        return np.fromiter((get(w, 0) for w in ids), np.int64, len(ids))

    def capacity(self, ix: npt.NDArray[np.intp], default: int) -> F64:
        """KV capacity per candidate, ``default`` where the snapshot has none."""
        cap = self.cap[ix]
        return np.where(cap > 0, cap, float(default))


def pick_ids(ids: list[str], mask: Bool) -> list[str]:
    """The ids where ``mask`` holds, in order; ``ids`` itself when all pass (so
    memos keyed on the list object keep hitting)."""
    if mask.all():
        return ids
    return [ids[i] for i in np.flatnonzero(mask).tolist()]


def _one(i: int) -> Gather:
    def g(col: Sequence[Any]) -> tuple[Any, ...]:
        return (col[i],)

    return g


def _none(col: Sequence[Any]) -> tuple[Any, ...]:
    return ()


def pick_list(ids: list[str], keep: Sequence[bool]) -> list[str]:
    """``pick_ids`` for a list of flags (``ids`` itself when all pass)."""
    out = list(compress(ids, keep))
    return ids if len(out) == len(ids) else out
