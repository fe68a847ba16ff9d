"""The live driver: level-triggered reconcile of the store against the policy core.

``reconcile(now_s)`` reads the whole state (snapshots, tenants, new request records,
the control hash), runs ``ControlPlanner.on_tick`` and, only while this process
holds the lease, writes the control fields that changed (one ``set_control``: one
version bump and change notice), appends every decision to the decisions stream
and hands absolute replica targets to the actuator. It returns ``requeue_after_s``
(controller-runtime's ``RequeueAfter``). Standbys run the same tick without acting
so their forecasts are warm when they take over. A store error drops leadership
at once and is reported in metrics; the loop retries with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.controller.actuators.base import Actuator
from controlplane.controller.leader import LeaderElector
from controlplane.controller.metrics import ControllerMetrics
from controlplane.policy.control_fields import changed_fields, encode_control, parse_control
from controlplane.policy.planner.control_planner import ControlPlanner
from controlplane.policy.planner.types import Effects, ScaleDecision, TickInput
from controlplane.schemas import RequestRecord
from controlplane.state.store import Store, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Result:
    requeue_after_s: float
    leader: bool = False
    error: str | None = None
    effects: Effects | None = None


class Controller:
    def __init__(
        self,
        store: Store,
        cluster: str,
        core: ControlPlanner,
        actuator: Actuator,
        metrics: ControllerMetrics,
        elector: LeaderElector,
        *,
        reassert_every_s: float = 30.0,
        max_backoff_s: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.core = core
        self.actuator = actuator
        self.metrics = metrics
        self.elector = elector
        self.reassert_every_s = reassert_every_s
        self.max_backoff_s = max_backoff_s
        self._cursor: str | None = None
        self._last_applied: dict[str, int] | None = None
        self._last_apply_s = float("-inf")
        self._failures = 0
        self._wake = asyncio.Event()
        self.wall_clock = wall_clock

    def wake(self) -> None:
        """Run the next reconcile now (e.g. on a tenant change notice)."""
        self._wake.set()

    async def _read_requests(self, now_s: float, max_records: int = 20_000) -> list[RequestRecord]:
        if self._cursor is None:  # start at "now": history is not current load
            self._cursor = f"{int(now_s * 1000)}-0"
        out: list[RequestRecord] = []
        while len(out) < max_records:
            page = await self.store.read_requests(self.cluster, self._cursor, count=1000)
            if not page:
                break
            self._cursor = page[-1][0]
            out.extend(r for _, r in page)
        return out

    async def reconcile(self, now_s: float) -> Result:
        t0 = time.perf_counter()
        result = await self._reconcile(now_s)
        self.metrics.reconcile_seconds.labels(self.cluster).observe(time.perf_counter() - t0)
        outcome = "error" if result.error else "leader" if result.leader else "standby"
        self.metrics.reconciles.labels(self.cluster, outcome).inc()
        self.metrics.is_leader.labels(self.cluster).set(1 if result.leader else 0)
        self.metrics.store_up.labels(self.cluster).set(1 if self.elector.store_up else 0)
        return result

    async def _reconcile(self, now_s: float) -> Result:
        await self.elector.renew()
        try:
            snaps = await self.store.get_snapshots(self.cluster)
            tenants = await self.store.list_tenants()
            records = await self._read_requests(now_s)
            raw = await self.store.get_control(self.cluster)
            current = await self.actuator.current_replicas()
            inp = TickInput(now_s, snaps, tenants, records, parse_control(raw), current)
            eff = self.core.on_tick(inp)
            self.metrics.observe(eff)
            leader = self.elector.is_leader()
            if leader:
                await self._act(now_s, raw, eff)
                leader = self.elector.is_leader()
        except StoreUnavailable as exc:
            self.elector.lost()
            self._failures += 1
            backoff = min(self.max_backoff_s, 0.25 * 2**self._failures)
            log.warning("store unavailable; not acting", extra={"error": str(exc)})
            return Result(backoff, False, "store_unavailable")
        self._failures = 0
        requeue = min(eff.next_tick_s, self.elector.renew_every_s)
        return Result(requeue, leader, None, eff)

    async def _act(self, now_s: float, raw: dict[str, str], eff: Effects) -> None:
        desired = encode_control(eff.route_weights, eff.draining, eff.admit)
        changes = changed_fields(raw, desired)
        holder = self.elector.holder
        if changes:
            version = await self.store.set_control(self.cluster, changes)
            self.metrics.control_writes.labels(self.cluster).inc()
            await self.store.append_decision(
                self.cluster,
                {"ts_s": round(now_s, 3), "kind": "control", "target": "control", "value": version,
                 "reason": "changed", "inputs": changes, "holder": holder},
            )  # fmt: skip
        for d in eff.decisions:
            rec = d.to_record(now_s)
            rec["holder"] = holder
            await self.store.append_decision(self.cluster, rec)
            log.info("decision %s %s", d.kind, d.reason, extra={"target": d.target})
        if eff.scale is not None:
            await self._actuate(now_s, eff.scale)

    async def _actuate(self, now_s: float, scale: ScaleDecision) -> None:
        desired = dict(scale.desired)
        due = now_s - self._last_apply_s >= self.reassert_every_s
        if desired == self._last_applied and not scale.remove_workers and not due:
            return
        res = await self.actuator.apply(scale)
        self._last_apply_s = now_s
        self._last_applied = desired if res.ok else None
        self.metrics.actuations.labels(
            self.cluster, self.actuator.name, "ok" if res.ok else "error"
        ).inc()
        for w in res.removed:
            await self.store.remove_worker(self.cluster, w)
        record: dict[str, Any] = {
            "ts_s": round(now_s, 3), "kind": "actuate", "target": self.actuator.name,
            "value": desired, "reason": "ok" if res.ok else "failed",
            "inputs": {"observed": dict(scale.observed), "detail": res.detail,
                       "removed": list(res.removed), "applied": dict(res.applied)},
            "holder": self.elector.holder,
        }  # fmt: skip
        await self.store.append_decision(self.cluster, record)

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until ``stop`` is set; then release the lease."""
        try:
            while not stop.is_set():
                try:
                    res = await self.reconcile(self.wall_clock())
                    delay = res.requeue_after_s
                except Exception:  # never let one bad tick kill the controller
                    log.exception("reconcile failed")
                    self.metrics.reconciles.labels(self.cluster, "panic").inc()
                    delay = self.max_backoff_s
                self._wake.clear()
                waiters = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(self._wake.wait()),
                ]
                _, pending = await asyncio.wait(
                    waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                )
                for p in pending:
                    p.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            await self.elector.release()
            self.metrics.is_leader.labels(self.cluster).set(0)
