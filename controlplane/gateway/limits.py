"""Rate limits and concurrency, atomic across gateway replicas through the store.

``admit`` checks the rpm bucket, the tpm bucket and the concurrency slot in that
order and stops at the first refusal, exactly as three separate store calls would;
on Redis it runs the whole sequence as ONE Lua script (one round trip on the
request path instead of three), elsewhere it makes the separate calls. A tenant
without limits costs no store call at all. If the store fails or is slow, this
replica falls back to local buckets/slots with the same arithmetic (fail open:
logged and counted) and skips the store until a backoff has passed, so an outage
costs one timeout, not one per request.

A store call whose outcome is unknown (timed out, failed or cancelled: the script may
still have run on the server) never leaves its concurrency slot leased: the request id
goes on an orphan list that a background task releases idempotently, retrying until the
store answers or the lease has run out anyway. Such a release leaves a tombstone, so an
acquire the server runs after it (queued behind a stall) takes nothing. A failed or
cancelled release of a held slot goes the same way. The request itself, after an unknown
outcome, is counted in this replica's local slots (fail open), so nothing it holds on the
store is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from controlplane.errors import RateLimited
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.policy.request.admission import LocalBuckets, LocalSlots, bucket_specs
from controlplane.policy.request.admission.rate_limit import BucketSpec, RateLimitParams
from controlplane.schemas import TenantSLA
from controlplane.state import keys
from controlplane.state.store import Store

log = logging.getLogger("slaplane.gateway.limits")
MAX_ORPHANS = 100_000
"""Unreleased slots remembered at most (beyond, their leases expire on their own)."""


@dataclass(slots=True)
class SlotHold:
    tenant: str
    request_id: str
    local: bool


class Limits:
    def __init__(
        self,
        store: Store,
        cluster: str,
        metrics: GatewayMetrics,
        params: RateLimitParams | None = None,
        timeout_s: float = 0.25,
        backoff_max_s: float = 5.0,
        slot_lease_ms: int = 600_000,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.metrics = metrics
        self.params = params or RateLimitParams()
        self.timeout_s = timeout_s
        self.backoff_max_s = backoff_max_s
        self.slot_lease_ms = slot_lease_ms
        self.local_buckets = LocalBuckets()
        self.local_slots = LocalSlots()
        self._down_until = 0.0
        self._backoff = 0.1
        # RedisStore registers the one-round-trip admit script; other stores take the
        # separate calls (tests/integration/test_gateway_limits.py checks they agree).
        self._admit_script: Any = getattr(store, "admit_script", None)
        self._orphans: dict[tuple[str, str], int] = {}
        """(tenant, request id) → ms after which its lease has expired anyway."""
        self._sweeper: asyncio.Task[None] | None = None

    def _orphan(self, tenant: str, request_id: str) -> None:
        """The store may hold a slot for ``request_id`` that no exit path will release:
        release it in the background (idempotent, with a tombstone)."""
        if len(self._orphans) < MAX_ORPHANS:
            self._orphans[(tenant, request_id)] = int(time.time() * 1000) + self.slot_lease_ms
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        backoff = 0.05
        while self._orphans:
            failed = False
            for key, until_ms in list(self._orphans.items()):
                left_ms = until_ms - int(time.time() * 1000)
                if left_ms > 0:
                    try:
                        await asyncio.wait_for(
                            self.store.release_slot(self.cluster, *key, forget_ms=left_ms),
                            self.timeout_s,
                        )
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        self.metrics.store_failures.labels(self.cluster, "release_slot").inc()
                        failed = True
                        break
                if self._orphans.get(key) == until_ms:
                    del self._orphans[key]
            if failed:
                await asyncio.sleep(backoff)
                backoff = min(self.backoff_max_s, backoff * 2)
            else:
                backoff = 0.05

    async def close(self) -> None:
        """Stop the orphan sweeper (leases left behind expire on their own)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def _store_usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _store_failed(self, op: str, exc: BaseException) -> None:
        self.metrics.store_failures.labels(self.cluster, op).inc()
        if self._down_until == 0.0:
            log.warning(
                "store unavailable: local rate limiting", extra={"op": op, "err": repr(exc)}
            )
        self._down_until = time.monotonic() + self._backoff
        self._backoff = min(self.backoff_max_s, self._backoff * 2)

    def _store_ok(self) -> None:
        if self._down_until:
            log.info("store reachable again: shared rate limiting")
        self._down_until, self._backoff = 0.0, 0.1

    async def admit(
        self, sla: TenantSLA, tenant: str, tokens: int, request_id: str
    ) -> SlotHold | None:
        """Rate limits then a concurrency slot; raises ``RateLimited`` on the first refusal."""
        specs = bucket_specs(sla, tokens, self.params)
        limit = sla.max_concurrency
        if not specs and limit is None:
            return None
        if self._admit_script is not None and self._store_usable():
            now_ms = int(time.time() * 1000)
            try:
                code, wait = await asyncio.wait_for(
                    self._run_admit(specs, tenant, request_id, limit, now_ms), self.timeout_s
                )
                self._store_ok()
            except asyncio.CancelledError:
                if limit is not None:
                    self._orphan(tenant, request_id)
                raise
            except Exception as exc:
                if limit is not None:
                    self._orphan(tenant, request_id)
                self._store_failed("admit", exc)
            else:
                if code == 0:
                    return SlotHold(tenant, request_id, local=False) if limit is not None else None
                if code <= len(specs):
                    w = float(wait)
                    raise _rate_limited(specs[code - 1], float("inf") if w < 0 else w)
                raise _too_many(limit)
        await self.check_rate(sla, tenant, tokens)
        return await self.acquire(sla, tenant, request_id)

    async def _run_admit(
        self, specs: list[BucketSpec], tenant: str, request_id: str, limit: int | None, now_ms: int
    ) -> tuple[int, str]:
        ks = [keys.ratelimit_key(self.cluster, tenant, sp.kind) for sp in specs]
        args: list[Any] = [len(specs), now_ms]
        for sp in specs:
            args += [repr(float(sp.amount)), repr(float(sp.capacity)), repr(float(sp.refill_per_s))]
        if limit is not None:
            ks.append(keys.inflight_key(self.cluster, tenant))
            ks.append(keys.released_key(self.cluster, tenant))
            args += [request_id, limit, now_ms + self.slot_lease_ms, now_ms]
        code, wait = await self._admit_script(keys=ks, args=args)
        return int(code), str(wait)

    async def check_rate(self, sla: TenantSLA, tenant: str, tokens: int) -> None:
        """Raise ``RateLimited`` (with Retry-After) if rpm or tpm is exhausted."""
        for spec in bucket_specs(sla, tokens, self.params):
            now_ms = int(time.time() * 1000)
            res = None
            if self._store_usable():
                try:
                    res = await asyncio.wait_for(
                        self.store.take_tokens(
                            self.cluster, tenant, spec.kind, spec.amount, spec.capacity,
                            spec.refill_per_s, now_ms,
                        ),
                        self.timeout_s,
                    )  # fmt: skip
                    self._store_ok()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._store_failed("take_tokens", exc)
            if res is None:
                res = self.local_buckets.take(tenant, spec, now_ms)
            if not res.allowed:
                raise _rate_limited(spec, res.retry_after_s)

    async def acquire(self, sla: TenantSLA, tenant: str, request_id: str) -> SlotHold | None:
        """Take a concurrency slot (None when the tenant has no limit)."""
        limit = sla.max_concurrency
        if limit is None:
            return None
        if self._store_usable():
            try:
                ok = await asyncio.wait_for(
                    self.store.acquire_slot(
                        self.cluster, tenant, request_id, limit, self.slot_lease_ms,
                        int(time.time() * 1000),
                    ),
                    self.timeout_s,
                )  # fmt: skip
            except asyncio.CancelledError:
                self._orphan(tenant, request_id)
                raise
            except Exception as exc:
                self._orphan(tenant, request_id)
                self._store_failed("acquire_slot", exc)
            else:
                self._store_ok()
                if not ok:
                    raise _too_many(limit)
                return SlotHold(tenant, request_id, local=False)
        if not self.local_slots.acquire(tenant, request_id, limit):
            raise _too_many(limit)
        return SlotHold(tenant, request_id, local=True)

    async def release(self, hold: SlotHold | None) -> None:
        if hold is None:
            return
        if hold.local:
            self.local_slots.release(hold.tenant, hold.request_id)
            return
        try:
            await asyncio.wait_for(
                self.store.release_slot(self.cluster, hold.tenant, hold.request_id),
                self.timeout_s,
            )
        except asyncio.CancelledError:
            self._orphan(hold.tenant, hold.request_id)
            raise
        except Exception as exc:
            self._orphan(hold.tenant, hold.request_id)
            self._store_failed("release_slot", exc)


def _rate_limited(spec: BucketSpec, retry_after_s: float) -> RateLimited:
    return RateLimited(
        f"Rate limit reached for {spec.kind} ({spec.capacity:g} per minute).",
        code=f"rate_limit_{spec.kind}",
        retry_after_s=retry_after_s,
    )


def _too_many(limit: int | None) -> RateLimited:
    return RateLimited(
        f"Too many concurrent requests (max {limit}).", code="concurrency_limit", retry_after_s=1.0
    )
