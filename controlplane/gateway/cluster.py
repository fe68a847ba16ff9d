"""The gateway's in-memory picture of the cluster, and the tasks that keep it fresh.

Routing reads only this (never Redis per request): snapshots arrive by following
``Store.read_telemetry`` (push), with a periodic ``get_snapshots`` resync and
control-hash refresh (also woken by ``control`` events). When the store is down
the last known state stays in use and the followers back off and retry.

Workers are reached at the URL their snapshot carries, so a snapshot whose URL is
outside the configured worker networks (``WorkerAllowList``) is skipped: never routed
to, counted, logged once per worker. A worker whose heartbeat is older than
``worker_ttl_s`` is dropped here at each resync, and the resync's ``get_snapshots``
removes it from the store's worker hash and heartbeat set as well (the gateway is the
one place that prunes; a live worker that publishes again comes back).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter

from controlplane.gateway.breaker import CircuitBreakers
from controlplane.gateway.config import parse_worker_network
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.policy.control_fields import ControlState, parse_control
from controlplane.policy.request.ledger import RequestLedger
from controlplane.policy.types import STATIC_SOURCE, ClusterView, build_pools, pick_source
from controlplane.schemas import WorkerSnapshot
from controlplane.state.store import Store

log = logging.getLogger("slaplane.gateway.cluster")
_LOGGED_MAX = 1024
"""Rejected (worker, URL) pairs remembered for log-once (beyond, rejections are only counted)."""


class WorkerAllowList:
    """Where workers may be reached. Empty: anywhere. Else an http(s) URL whose host is
    an address inside one of the networks, or whose ``host:port`` is listed (a host
    name is never resolved here: list it as host:port)."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.hostports: set[str] = set()
        for e in entries:
            p = parse_worker_network(e)
            if isinstance(p, str):
                self.hostports.add(p)
            else:
                self.networks.append(p)
        self.allow_all = not self.networks and not self.hostports
        self._seen: dict[str, bool] = {}

    def allows(self, url: str) -> bool:
        if self.allow_all:
            return True
        ok = self._seen.get(url)
        if ok is None:
            ok = self._check(url)
            if len(self._seen) >= 4096:
                self._seen.clear()
            self._seen[url] = ok
        return ok

    def _check(self, url: str) -> bool:
        try:
            u = urlsplit(url)
            host, port = u.hostname, u.port
        except ValueError:
            return False
        if u.scheme not in ("http", "https") or not host:
            return False
        if port is None:
            port = 443 if u.scheme == "https" else 80
        hp = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if hp in self.hostports:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in n for n in self.networks)


class ClusterState:
    """Snapshots by publisher, the one-per-worker ``workers`` view routing reads, pools.

    Every publisher's latest snapshot is kept in ``raw`` (agent ``w``, its plugin
    shadow ``w-plugin``, flag-only static entries); ``workers`` shows one snapshot per
    worker URL (``pick_source``), so a worker reported twice is never routed to as
    two. Each change bumps ``version``, which lets routers reuse per-worker work
    between telemetry updates; ``view()`` returns the same ``ClusterView`` object
    until then, so a request builds nothing.
    """

    def __init__(
        self,
        cluster: str,
        stale_after_s: float,
        breakers: CircuitBreakers,
        ledger: RequestLedger | None = None,
        *,
        allow: WorkerAllowList | None = None,
        worker_ttl_s: float = 60.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.cluster = cluster
        self.stale_after_s = stale_after_s
        self.breakers = breakers
        self.allow = allow if allow is not None else WorkerAllowList()
        self.worker_ttl_s = worker_ttl_s
        """Snapshots with an older heartbeat are dropped (and pruned from the store)."""
        self.rejected = 0
        """Snapshots skipped because their URL is outside ``allow``."""
        self._rejected_logged: set[tuple[str, str]] = set()
        self._rejected_metric = Counter(
            "slaplane_gateway_worker_snapshots_rejected_total",
            "Worker snapshots skipped because their URL is outside the allowed worker networks.",
            ["cluster"], registry=registry,
        ).labels(cluster) if registry is not None else None  # fmt: skip
        self.raw: dict[str, WorkerSnapshot] = {}
        self.workers: dict[str, WorkerSnapshot] = {}
        self.static: dict[str, WorkerSnapshot] = {}
        self.pools: dict[tuple[str, str], list[str]] = {}
        self.model_names: frozenset[str] = frozenset()
        """Models with a pool: the per-request unknown-model check (no sorting)."""
        self.control = ControlState()
        self.ledger = ledger if ledger is not None else RequestLedger()
        """The request pipeline's bookkeeping; the view shows its in-flight counters."""
        self.version = 0
        self._urls: dict[str, set[str]] = {}
        """URL → publisher ids in ``raw`` (and static ids) reporting on it."""
        self._shown: dict[str, str] = {}
        """URL → the id ``workers`` shows it under."""
        self._membership: tuple[tuple[str, str, str], ...] = ()
        self._members_dirty = False
        self.listener: Callable[[], object] | None = None
        """Called on every telemetry change (the gateway wakes a held request)."""
        self._view: ClusterView | None = None
        self._view_open: frozenset[str] | None = None

    # --- updates -----------------------------------------------------------
    def add_static(self, worker: str, role: str, url: str, model: str) -> None:
        snap = WorkerSnapshot(self.cluster, worker, role, model, url=url, source=STATIC_SOURCE)
        self.static[worker] = snap
        self._put(snap)
        self._rebuild()

    def apply(self, snap: WorkerSnapshot) -> None:
        old = self.raw.get(snap.worker)
        if old is not None and old.source != STATIC_SOURCE and old.ts_ms > snap.ts_ms:
            return  # out of order
        if not self._reachable(snap):
            if old is not None and snap.worker not in self.static:
                self._drop(snap.worker)  # it moved outside: its old URL is not it either
                self._changed()
            return
        if snap.ts_ms < (time.time() - self.worker_ttl_s) * 1000:
            return  # a heartbeat already past its TTL
        self._put(snap)
        self._changed()

    def resync(self, snaps: Mapping[str, WorkerSnapshot]) -> None:
        """Replace every store-fed snapshot by ``snaps``, leaving out those outside the
        allowed networks and those whose heartbeat is older than ``worker_ttl_s``."""
        self.raw, self._urls, self._shown, self.workers = {}, {}, {}, {}
        for s in self.static.values():
            self._put(s, show=False)
        cutoff_ms = (time.time() - self.worker_ttl_s) * 1000
        for s in snaps.values():
            if s.ts_ms >= cutoff_ms and self._reachable(s):
                self._put(s, show=False)
        now = time.time()
        for url in self._urls:
            self._show(url, now)
        for w, s in self.raw.items():
            if not _url(s):
                self.workers[w] = s
        self._rebuild()

    def set_control(self, raw: Mapping[str, str]) -> None:
        self.control = parse_control(raw)
        self._view = None

    def _reachable(self, snap: WorkerSnapshot) -> bool:
        """False (counted, logged once per worker and URL) if the URL is not allowed."""
        url = _url(snap)
        if not url or self.allow.allows(url):
            return True
        self.rejected += 1
        if self._rejected_metric is not None:
            self._rejected_metric.inc()
        key = (snap.worker, url)
        if key not in self._rejected_logged and len(self._rejected_logged) < _LOGGED_MAX:
            self._rejected_logged.add(key)
            log.warning(
                "worker URL outside the allowed worker networks: never routed to",
                extra={"worker": snap.worker, "url": url},
            )
        return False

    def _drop(self, worker: str) -> None:
        old = self.raw.pop(worker, None)
        if old is None:
            return
        url = _url(old)
        if url:
            ids = self._urls.get(url)
            if ids is not None:
                ids.discard(worker)
                if not ids:
                    del self._urls[url]
            self._show(url, time.time())
        elif self.workers.pop(worker, None) is not None:
            self._members_dirty = True

    def _put(self, snap: WorkerSnapshot, show: bool = True) -> None:
        old = self.raw.get(snap.worker)
        self.raw[snap.worker] = snap
        if old is not None and _url(old) != _url(snap) and _url(old):
            ids = self._urls.get(_url(old), set())
            ids.discard(snap.worker)
            if show:
                self._show(_url(old), time.time())
        url = _url(snap)
        if not url:
            prev = self.workers.get(snap.worker)
            if prev is None or (prev.role, prev.model) != (snap.role, snap.model):
                self._members_dirty = True
            self.workers[snap.worker] = snap
            return
        self._urls.setdefault(url, set()).add(snap.worker)
        if show:
            self._show(url, time.time())

    def _show(self, url: str, now_s: float) -> None:
        group = [self.raw[w] for w in self._urls.get(url, ()) if w in self.raw]
        chosen = pick_source(group, now_s, self.stale_after_s)
        before = self._shown.pop(url, None)
        prev = self.workers.pop(before, None) if before is not None else None
        if chosen is not None:
            self.workers[chosen.worker] = chosen
            self._shown[url] = chosen.worker
        if (prev is None) != (chosen is None) or (
            prev is not None
            and chosen is not None
            and (prev.worker, prev.role, prev.model) != (chosen.worker, chosen.role, chosen.model)
        ):
            self._members_dirty = True

    def _changed(self) -> None:
        self._view = None
        if self.listener is not None:
            self.listener()
        if self._members_dirty:
            self._rebuild()

    def _rebuild(self) -> None:
        self._view = None
        self._members_dirty = False
        key = tuple(sorted((w, s.role, s.model) for w, s in self.workers.items()))
        if key != self._membership:
            self._membership = key
            self.pools = build_pools(self.workers)
            self.model_names = frozenset(m for m, _ in self.pools)

    # --- reads -------------------------------------------------------------
    def view(self) -> ClusterView:
        """The current view; the same object (and version) until something changes."""
        v = self._view
        if v is not None and self._view_open is self.breakers.open:
            return v
        self.version += 1
        c = self.control
        self._view_open = self.breakers.open
        v = self._view = ClusterView(
            workers=self.workers,
            route_weights=c.route_weights,
            draining=c.draining,
            unavailable=self.breakers.open,
            inflight=self.ledger.inflight,
            pending_prefill_tokens=self.ledger.pending_prefill_tokens,
            stale_after_s=self.stale_after_s,
            pools=self.pools,
            version=self.version,
        )
        return v

    @property
    def inflight(self) -> dict[str, int]:
        return self.ledger.inflight

    @property
    def pending_prefill_tokens(self) -> dict[str, int]:
        return self.ledger.pending_prefill_tokens

    def models(self) -> list[str]:
        return sorted({m for m, _ in self.pools})

    def url(self, worker: str) -> str:
        return self.workers[worker].url.rstrip("/")

    def usable_count(self, now_s: float) -> int:
        stale_ms = (now_s - self.stale_after_s) * 1000
        return sum(
            1
            for s in self.workers.values()
            if s.up and (s.source == STATIC_SOURCE or s.ts_ms >= stale_ms)
        )

    def set_static_model(self, worker: str, model: str) -> None:
        snap = self.static.get(worker)
        if snap is not None and snap.model != model:
            self.static[worker] = replace(snap, model=model)
            if self.raw.get(worker, snap).source == STATIC_SOURCE:
                self._put(self.static[worker])
            self._rebuild()


def _url(s: WorkerSnapshot) -> str:
    return s.url.rstrip("/")


class Follower:
    """Background tasks feeding ``ClusterState`` from the store, with backoff."""

    def __init__(
        self,
        store: Store,
        state: ClusterState,
        metrics: GatewayMetrics,
        resync_s: float = 2.0,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.store = store
        self.state = state
        self.metrics = metrics
        self.resync_s = resync_s
        self.backoff_max_s = backoff_max_s
        self.wake = asyncio.Event()
        self.store_ok = True

    def _failed(self, op: str, exc: BaseException, backoff: float) -> float:
        self.metrics.store_failures.labels(self.state.cluster, op).inc()
        if self.store_ok:
            log.warning(
                "store unavailable, serving last known state", extra={"op": op, "err": repr(exc)}
            )
        self.store_ok = False
        return min(self.backoff_max_s, max(0.05, backoff * 2))

    async def resync_once(self) -> None:
        snaps = await self.store.get_snapshots(
            self.state.cluster, max_age_ms=int(self.state.worker_ttl_s * 1000)
        )
        self.state.resync(snaps)
        self.state.set_control(await self.store.get_control(self.state.cluster))
        if not self.store_ok:
            log.info("store reachable again")
        self.store_ok = True

    async def run_resync(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self.resync_once()
                backoff = 0.05
                delay = self.resync_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = delay = self._failed("resync", exc, backoff)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    async def run_telemetry(self) -> None:
        last_id = "$"
        backoff = 0.05
        while True:
            try:
                entries = await self.store.read_telemetry(
                    self.state.cluster, last_id, count=1000, block_ms=1000
                )
                backoff = 0.05
                for entry_id, snap in entries:
                    last_id = entry_id
                    self.state.apply(snap)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = self._failed("telemetry", exc, backoff)
                last_id = "$"  # the stream may be gone after a restart; resync covers the gap
                self.wake.set()
                await asyncio.sleep(backoff)

    async def run_events(self, on_event: asyncio.Queue[dict[str, object]]) -> None:
        backoff = 0.05
        while True:
            try:
                async for ev in self.store.subscribe_events():
                    backoff = 0.05
                    if ev.get("kind") == "control":
                        self.wake.set()
                    on_event.put_nowait(ev)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = self._failed("events", exc, backoff)
            await asyncio.sleep(backoff)


def now_s() -> float:
    return time.time()
