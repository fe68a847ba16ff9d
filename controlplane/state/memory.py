"""In-process store: the embedded default for single-process runs and the fake in unit tests.

Same semantics as the Redis store (the shared test suite runs against both),
including blocking stream reads and change notices.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from controlplane.policy.request.admission import buckets
from controlplane.policy.request.admission.buckets import BucketResult
from controlplane.schemas import RequestRecord, TenantSLA, WorkerSnapshot
from controlplane.state import keys


class _Stream:
    """A capped append-only log with Redis-like ``ms-seq`` ids and blocking reads."""

    def __init__(self, maxlen: int) -> None:
        self.entries: deque[tuple[tuple[int, int], dict[str, str]]] = deque(maxlen=maxlen)
        self._last: tuple[int, int] = (0, 0)
        self._cond = asyncio.Condition()

    def _next_id(self) -> tuple[int, int]:
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return self._last

    async def add(self, fields: dict[str, str]) -> str:
        eid = self._next_id()
        self.entries.append((eid, fields))
        async with self._cond:
            self._cond.notify_all()
        return f"{eid[0]}-{eid[1]}"

    @staticmethod
    def _parse(last_id: str) -> tuple[int, int]:
        ms, _, seq = last_id.partition("-")
        return int(ms), int(seq or 0)

    def _after(self, after: tuple[int, int], count: int) -> list[tuple[str, dict[str, str]]]:
        out = []
        for eid, fields in self.entries:
            if eid > after:
                out.append((f"{eid[0]}-{eid[1]}", fields))
                if len(out) >= count:
                    break
        return out

    async def read(
        self, last_id: str, count: int, block_ms: int | None
    ) -> list[tuple[str, dict[str, str]]]:
        after = self._last if last_id == "$" else self._parse(last_id)
        got = self._after(after, count)
        if got or block_ms is None:
            return got
        async with self._cond:
            try:
                await asyncio.wait_for(
                    self._cond.wait_for(lambda: bool(self._after(after, 1))),
                    timeout=block_ms / 1000.0 if block_ms > 0 else None,
                )
            except TimeoutError:
                return []
        return self._after(after, count)


class MemoryStore:
    """All state in dicts; safe within one event loop."""

    def __init__(self) -> None:
        self._hashes: dict[str, dict[str, str]] = {}
        self._zsets: dict[str, dict[str, float]] = {}
        self._streams: dict[str, _Stream] = {}
        self._strings: dict[str, tuple[str, float]] = {}  # value, expiry monotonic
        self._subscribers: list[asyncio.Queue[dict[str, Any]]] = []
        self._ids = itertools.count(1)

    def _stream(self, key: str, maxlen: int) -> _Stream:
        s = self._streams.get(key)
        if s is None:
            s = self._streams[key] = _Stream(maxlen)
        return s

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    # --- worker telemetry ------------------------------------------------
    async def publish_snapshot(self, snap: WorkerSnapshot) -> None:
        fields = snap.to_redis()
        self._hashes[keys.worker_hash(snap.cluster, snap.worker)] = fields
        self._zsets.setdefault(keys.workers_zset(snap.cluster), {})[snap.worker] = snap.ts_ms
        await self._stream(keys.telemetry_stream(snap.cluster), keys.TELEMETRY_STREAM_MAXLEN).add(
            fields
        )

    async def get_snapshots(
        self, cluster: str, max_age_ms: int | None = None
    ) -> dict[str, WorkerSnapshot]:
        out = {}
        beats = self._zsets.get(keys.workers_zset(cluster), {})
        if max_age_ms is not None:
            cutoff = int(time.time() * 1000) - max_age_ms
            for w in [w for w, ts in beats.items() if ts < cutoff]:
                await self.remove_worker(cluster, w)
        for w in beats:
            h = self._hashes.get(keys.worker_hash(cluster, w))
            if h:
                out[w] = WorkerSnapshot.from_redis(h)
        return out

    async def list_workers(self, cluster: str) -> dict[str, int]:
        return {w: int(ms) for w, ms in self._zsets.get(keys.workers_zset(cluster), {}).items()}

    async def remove_worker(self, cluster: str, worker: str) -> None:
        self._zsets.get(keys.workers_zset(cluster), {}).pop(worker, None)
        self._hashes.pop(keys.worker_hash(cluster, worker), None)

    async def read_telemetry(
        self, cluster: str, last_id: str = "$", count: int = 1000, block_ms: int | None = None
    ) -> list[tuple[str, WorkerSnapshot]]:
        s = self._stream(keys.telemetry_stream(cluster), keys.TELEMETRY_STREAM_MAXLEN)
        return [
            (i, WorkerSnapshot.from_redis(f)) for i, f in await s.read(last_id, count, block_ms)
        ]

    # --- tenants and keys ------------------------------------------------
    async def put_tenant(self, sla: TenantSLA) -> None:
        self._hashes.setdefault(keys.TENANTS, {})[sla.tenant] = sla.model_dump_json()
        await self.publish_event({"kind": "tenant", "tenant": sla.tenant})

    async def get_tenant(self, tenant: str) -> TenantSLA | None:
        raw = self._hashes.get(keys.TENANTS, {}).get(tenant)
        return TenantSLA.model_validate_json(raw) if raw else None

    async def list_tenants(self) -> dict[str, TenantSLA]:
        return {
            t: TenantSLA.model_validate_json(raw)
            for t, raw in self._hashes.get(keys.TENANTS, {}).items()
        }

    async def delete_tenant(self, tenant: str) -> bool:
        gone = self._hashes.get(keys.TENANTS, {}).pop(tenant, None) is not None
        if gone:
            await self.publish_event({"kind": "tenant", "tenant": tenant, "deleted": True})
        return gone

    async def put_api_key(self, key_sha256: str, tenant: str) -> None:
        self._hashes.setdefault(keys.APIKEYS, {})[key_sha256] = tenant
        await self.publish_event({"kind": "apikey"})

    async def tenant_for_key(self, key_sha256: str) -> str | None:
        return self._hashes.get(keys.APIKEYS, {}).get(key_sha256)

    async def delete_api_key(self, key_sha256: str) -> bool:
        gone = self._hashes.get(keys.APIKEYS, {}).pop(key_sha256, None) is not None
        if gone:
            await self.publish_event({"kind": "apikey", "deleted": True})
        return gone

    # --- finished requests ----------------------------------------------
    async def append_requests(self, cluster: str, records: Sequence[RequestRecord]) -> None:
        s = self._stream(keys.requests_stream(cluster), keys.REQUESTS_STREAM_MAXLEN)
        for r in records:
            await s.add(r.to_redis())

    async def read_requests(
        self, cluster: str, last_id: str = "0", count: int = 1000, block_ms: int | None = None
    ) -> list[tuple[str, RequestRecord]]:
        s = self._stream(keys.requests_stream(cluster), keys.REQUESTS_STREAM_MAXLEN)
        return [(i, RequestRecord.from_redis(f)) for i, f in await s.read(last_id, count, block_ms)]

    # --- control state and decisions ------------------------------------
    async def get_control(self, cluster: str) -> dict[str, str]:
        return dict(self._hashes.get(keys.control_hash(cluster), {}))

    async def set_control(self, cluster: str, fields: Mapping[str, str]) -> int:
        h = self._hashes.setdefault(keys.control_hash(cluster), {})
        h.update(fields)
        version = int(h.get("version", "0")) + 1
        h["version"] = str(version)
        await self.publish_event({"kind": "control", "cluster": cluster, "version": version})
        return version

    async def append_decision(self, cluster: str, decision: Mapping[str, Any]) -> str:
        s = self._stream(keys.decisions_stream(cluster), keys.DECISIONS_STREAM_MAXLEN)
        return await s.add({"json": json.dumps(dict(decision), default=str)})

    async def read_decisions(
        self, cluster: str, last_id: str = "0", count: int = 1000
    ) -> list[tuple[str, dict[str, Any]]]:
        s = self._stream(keys.decisions_stream(cluster), keys.DECISIONS_STREAM_MAXLEN)
        return [(i, json.loads(f["json"])) for i, f in await s.read(last_id, count, None)]

    # --- leader lease ----------------------------------------------------
    def _live_string(self, key: str) -> str | None:
        item = self._strings.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._strings[key]
            return None
        return item[0]

    async def acquire_lease(self, cluster: str, holder: str, ttl_ms: int) -> bool:
        key = keys.leader_key(cluster)
        cur = self._live_string(key)
        if cur is None or cur == holder:
            self._strings[key] = (holder, time.monotonic() + ttl_ms / 1000.0)
            return True
        return False

    async def release_lease(self, cluster: str, holder: str) -> bool:
        key = keys.leader_key(cluster)
        if self._live_string(key) == holder:
            del self._strings[key]
            return True
        return False

    async def lease_holder(self, cluster: str) -> str | None:
        return self._live_string(keys.leader_key(cluster))

    # --- admission primitives --------------------------------------------
    async def take_tokens(
        self,
        cluster: str,
        tenant: str,
        kind: str,
        amount: float,
        capacity: float,
        refill_per_s: float,
        now_ms: int,
    ) -> BucketResult:
        h = self._hashes.setdefault(keys.ratelimit_key(cluster, tenant, kind), {})
        tokens = float(h["tokens"]) if "tokens" in h else None
        ts = int(h["ts"]) if "ts" in h else None
        result, new_tokens, new_ts = buckets.take(
            tokens, ts, amount, capacity, refill_per_s, now_ms
        )
        h["tokens"], h["ts"] = repr(new_tokens), str(new_ts)
        return result

    async def acquire_slot(
        self, cluster: str, tenant: str, request_id: str, limit: int, lease_ms: int, now_ms: int
    ) -> bool:
        dead = self._zsets.get(keys.released_key(cluster, tenant), {}).get(request_id)
        if dead is not None and dead > now_ms:
            return False
        z = self._zsets.setdefault(keys.inflight_key(cluster, tenant), {})
        for rid in [r for r, exp in z.items() if exp <= now_ms]:
            del z[rid]
        if request_id not in z and len(z) >= limit:
            return False
        z[request_id] = now_ms + lease_ms
        return True

    async def release_slot(
        self, cluster: str, tenant: str, request_id: str, forget_ms: int = 0
    ) -> None:
        self._zsets.get(keys.inflight_key(cluster, tenant), {}).pop(request_id, None)
        if forget_ms > 0:
            now_ms = int(time.time() * 1000)
            gone = self._zsets.setdefault(keys.released_key(cluster, tenant), {})
            for rid in [r for r, exp in gone.items() if exp <= now_ms]:
                del gone[rid]
            gone[request_id] = now_ms + forget_ms

    # --- change notices and audit -------------------------------------------
    async def publish_event(self, event: Mapping[str, Any]) -> None:
        for q in list(self._subscribers):
            q.put_nowait(dict(event))

    async def subscribe_events(self) -> AsyncIterator[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.remove(q)

    async def append_audit(self, entry: Mapping[str, Any]) -> str:
        s = self._stream(keys.AUDIT, keys.AUDIT_STREAM_MAXLEN)
        return await s.add({"json": json.dumps(dict(entry), default=str)})
