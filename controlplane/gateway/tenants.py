"""Tenant identity and SLA lookups, cached briefly and invalidated on store events.

A key is looked up by its sha256 (the store never holds raw keys). Positive
answers are cached ``ttl_s``, negative ones a tenth of that, and any ``tenant`` or
``apikey`` event clears the cache so revocations apply at once. When the store
is down, cached answers are used past their TTL (fail open on last known state);
an uncached key then gets 503, not a guess.

Both caches are bounded LRUs: random keys or tenant ids from the internet evict each
other, never grow the gateway. A client address that keeps failing authentication is
refused with 429 before any lookup (``AuthFailures``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from controlplane.errors import NoCapacity, RateLimited, Unauthorized
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.schemas import DEFAULT_TENANT, Priority, TenantSLA
from controlplane.state.store import Store

log = logging.getLogger("slaplane.gateway.tenants")
T = TypeVar("T")
_MISSING = object()


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class LruCache(OrderedDict[str, tuple[float, T | None]]):
    """(expiry, value) by key, least recently used dropped past ``max_entries``."""

    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = max_entries

    def lookup(self, key: str) -> tuple[float, T | None] | None:
        """The entry, marked as recently used (its expiry is the caller's to judge)."""
        hit = self.get(key)
        if hit is not None:
            self.move_to_end(key)
        return hit

    def put(self, key: str, value: tuple[float, T | None]) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.max_entries:
            self.popitem(last=False)


def _expire(cache: LruCache[T]) -> None:
    for k, (_, v) in list(cache.items()):
        cache[k] = (0.0, v)


class AuthFailures:
    """Failed authentications per client address, as a token bucket: ``burst`` failures
    at once, then ``per_minute``; past that the address gets 429 before any lookup, so
    guessing keys costs the guesser, not the store. Addresses are an LRU too."""

    def __init__(self, burst: int = 20, per_minute: float = 20.0, max_clients: int = 10_000):
        self.burst = float(burst)
        self.rate_s = per_minute / 60.0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.max_clients = max_clients

    def _level(self, client: str, now_s: float) -> float:
        tokens, ts = self._buckets.get(client, (self.burst, now_s))
        return min(self.burst, tokens + (now_s - ts) * self.rate_s)

    def check(self, client: str, now_s: float) -> None:
        if client not in self._buckets:
            return
        level = self._level(client, now_s)
        if level < 1.0:
            wait = (1.0 - level) / self.rate_s
            raise RateLimited(
                "Too many failed authentications from this address.",
                code="auth_rate_limited",
                retry_after_s=max(1.0, wait),
            )

    def failed(self, client: str, now_s: float) -> None:
        self._buckets[client] = (self._level(client, now_s) - 1.0, now_s)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


class TenantDirectory:
    def __init__(
        self,
        store: Store,
        metrics: GatewayMetrics,
        ttl_s: float = 10.0,
        store_timeout_s: float = 0.25,
        max_entries: int = 10_000,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.timeout_s = store_timeout_s
        self._keys: LruCache[str] = LruCache(max_entries)
        self._slas: LruCache[TenantSLA] = LruCache(max_entries)
        self._builtin = TenantSLA(tenant=DEFAULT_TENANT)
        """Built once: a pydantic model per request costs more than the lookup itself."""
        self.priorities: dict[str, Priority] = {}
        """Known tenants' priorities (admission's premium rule), refreshed by ``refresh``."""

    def invalidate(self) -> None:
        """Force a re-read of every entry but keep the values: if the store fails on that
        re-read (an event often comes right after a Redis restart), the last known answer
        still serves instead of a 503. A revoked key is refused as soon as the store answers."""
        _expire(self._keys)
        _expire(self._slas)

    async def _cached(
        self,
        cache: LruCache[T],
        key: str,
        fetch: Callable[[], Awaitable[T | None]],
        op: str,
    ) -> T | None:
        now = time.monotonic()
        hit = cache.lookup(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            val = await asyncio.wait_for(fetch(), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.store_failures.labels(self.metrics.cluster, op).inc()
            if hit is not None:
                return hit[1]  # fail open: last known answer
            raise NoCapacity(
                "tenant directory unavailable, retry shortly", code="store_unavailable",
                retry_after_s=1.0,
            ) from exc  # fmt: skip
        ttl = self.ttl_s if val is not None else self.ttl_s / 10
        cache.put(key, (now + ttl, val))
        return val

    def cached_sla(self, tenant: str) -> TenantSLA | None:
        """The SLA from a fresh cache entry, without a coroutine (hot-path fast lane);
        None when ``sla_for`` has to be awaited."""
        now = time.monotonic()
        hit = self._slas.get(tenant)
        if hit is None or hit[0] <= now:
            return None
        if hit[1] is not None:
            return hit[1]
        if tenant == DEFAULT_TENANT:
            return self._builtin
        d = self._slas.get(DEFAULT_TENANT)
        if d is None or d[0] <= now:
            return None
        return d[1] or self._builtin

    async def tenant_for_key(self, key: str) -> str:
        digest = key_sha256(key)
        tenant = await self._cached(
            self._keys, digest, lambda: self.store.tenant_for_key(digest), "apikey"
        )
        if tenant is None:
            raise Unauthorized("Incorrect API key provided.")
        return tenant

    async def sla_for(self, tenant: str) -> TenantSLA:
        """The tenant's SLA, else the ``default`` tenant's, else built-in defaults."""
        sla = await self._cached(self._slas, tenant, lambda: self.store.get_tenant(tenant), "sla")
        if sla is not None:
            return sla
        if tenant != DEFAULT_TENANT:
            d = await self._cached(
                self._slas, DEFAULT_TENANT, lambda: self.store.get_tenant(DEFAULT_TENANT), "sla"
            )
            if d is not None:
                return d
        return self._builtin

    async def refresh(self) -> None:
        """Reload every tenant (priorities, SLA gauges); called off the hot path."""
        tenants = await self.store.list_tenants()
        gone = set(self.priorities) - set(tenants)
        self.priorities = {t: s.priority for t, s in tenants.items()}
        for sla in tenants.values():
            self.metrics.set_tenant(sla)
        for t in gone:
            self.metrics.remove_tenant(t)
