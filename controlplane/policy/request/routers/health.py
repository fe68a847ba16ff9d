"""Health filter: drop workers that are down, draining, weighted to 0, suspected by the
driver (open circuit breaker) or whose telemetry is stale (stale = saturated).

Workers known only from static flags (``source == "static"``) have no telemetry and
are never stale. Params: none besides the view's ``stale_after_s``.

With the Profile's column store the answer is reused, even across view versions,
while nothing it depends on changed: the column epoch (workers added, ``up`` or static
flipped, drains, breakers, zero weights), no worker it dropped as stale has reported
since, and the clock stays inside the window in which no kept worker crosses the
staleness line (``lo < stale line <= hi``). Fresh load numbers alone never change it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from controlplane.policy.request.routers.columns import pick_ids
from controlplane.policy.types import STATIC_SOURCE, Candidates, RouteRequest


@dataclass(frozen=True, slots=True)
class _Memo:
    """An answer and the conditions under which it still holds: same column epoch,
    the staleness line inside (lo, hi], and no stale-dropped worker reported since."""

    ids: list[str]
    out: list[str]
    lo: float
    hi: float
    dropped: list[int]
    epoch: int
    syncs: int
    stale_after_s: float


class HealthParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthFilter:
    type_name = "health-filter"

    def __init__(self, name: str = "health", params: HealthParams | None = None) -> None:
        self.name = name
        self.params = params or HealthParams()

    def filter(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[str]:
        cols = workers.columns
        if cols is None:
            return self.filter_slow(req, workers, now_s)
        view = workers.view
        stale_ms = (now_s - view.stale_after_s) * 1000.0
        ids = workers.ids()
        key = (id(self), id(ids))
        memo: _Memo | None = cols.health_memo.get(key) if cols.cached else None
        if (
            memo is not None
            and memo.ids is ids
            and memo.epoch == cols.epoch
            and memo.stale_after_s == view.stale_after_s
            and memo.lo < stale_ms <= memo.hi
            and not (memo.dropped and _reported_since(cols.wver_list, memo.dropped, memo.syncs))
        ):
            return memo.out
        ix = cols.idx(ids)
        ts = cols.ts[ix]
        static = cols.static[ix]
        fresh = static | (ts >= stale_ms)
        base = cols.up[ix] & cols.ctl_ok[ix]
        keep = base & fresh
        kept_ts = ts[keep & ~static]
        stale = base & ~fresh
        hi = float(kept_ts.min()) if kept_ts.size else np.inf
        lo = float(ts[stale].max()) if stale.any() else -np.inf
        out = pick_ids(ids, keep)
        if cols.cached:
            if len(cols.health_memo) > 512:
                cols.health_memo.clear()
            cols.health_memo[key] = _Memo(
                ids, out, lo, hi, ix[stale].tolist(), cols.epoch, cols.syncs, view.stale_after_s
            )
        return out

    def filter_slow(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[str]:
        """Reference implementation over snapshots (no column store)."""
        view = workers.view
        stale_ms = (now_s - view.stale_after_s) * 1000.0
        rw = view.route_weights
        out: list[str] = []
        for w, s in workers.items_fast():
            if not s.up or w in view.draining or w in view.unavailable:
                continue
            if rw and rw.get(w, 1.0) <= 0.0:
                continue
            if s.source != STATIC_SOURCE and s.ts_ms < stale_ms:
                continue
            out.append(w)
        return out


def _reported_since(wver: list[int], rows: list[int], syncs: int) -> bool:
    return any(wver[i] > syncs for i in rows)
