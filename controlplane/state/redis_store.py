"""Redis implementation of the store (redis-py asyncio client).

Each method is one round trip: a non-transactional pipeline where the writes are
independent (snapshot publish), MULTI where they must be seen together (control
version bump), and Lua where a read-modify-write must be atomic across gateway
replicas (token buckets, concurrency slots, lease renewal). Connection problems
surface as ``StoreUnavailable`` so callers can fail open deliberately.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from controlplane.policy.request.admission.buckets import BucketResult
from controlplane.schemas import RequestRecord, TenantSLA, WorkerSnapshot
from controlplane.state import keys
from controlplane.state.store import StoreUnavailable

log = logging.getLogger("slaplane.state")

# Transcription of policy.request.admission.buckets.take (kept identical by a shared test).
# The bucket and slot steps are Lua functions so the single-step scripts and the
# gateway's one-round-trip admit script run the very same code.
_BUCKET_FN = """
local function take_bucket(key, amount, capacity, refill, now)
  local tokens = tonumber(redis.call('HGET', key, 'tokens'))
  local ts = tonumber(redis.call('HGET', key, 'ts'))
  if tokens == nil or ts == nil then tokens = capacity; ts = now end
  local elapsed = math.max(0, now - ts) / 1000.0
  tokens = math.min(capacity, tokens + elapsed * refill)
  local need = math.min(amount, capacity)
  local allowed = 0
  local wait = 0
  if tokens >= need then
    tokens = tokens - amount
    allowed = 1
  else
    if refill > 0 then wait = (need - tokens) / refill else wait = -1 end
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  local ttl = 60000
  if refill > 0 then ttl = math.ceil(capacity / refill * 1000) + 60000 end
  redis.call('PEXPIRE', key, ttl)
  return allowed, tokens, wait
end
"""

_SLOT_FN = """
local function acquire_slot(key, gone, rid, limit, expiry_ms, now_ms)
  local dead = redis.call('ZSCORE', gone, rid)
  if dead ~= false and tonumber(dead) > now_ms then return 0 end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
  if redis.call('ZSCORE', key, rid) == false and redis.call('ZCARD', key) >= limit then
    return 0
  end
  redis.call('ZADD', key, expiry_ms, rid)
  redis.call('PEXPIRE', key, math.max(1, expiry_ms - now_ms))
  return 1
end
"""

_TAKE_TOKENS = (
    _BUCKET_FN
    + """
local allowed, tokens, wait = take_bucket(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
                                          tonumber(ARGV[3]), tonumber(ARGV[4]))
return {allowed, tostring(tokens), tostring(wait)}
"""
)

_ACQUIRE_SLOT = (
    _SLOT_FN
    + """
return acquire_slot(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
                    tonumber(ARGV[4]))
"""
)

# Idempotent; with a tombstone (ARGV[2] = its expiry ms > ARGV[3] = now ms) an acquire of
# the same id that the server runs later (the client gave up on it) takes nothing.
_RELEASE_SLOT = """
redis.call('ZREM', KEYS[1], ARGV[1])
local until_ms = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if until_ms > now then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('ZADD', KEYS[2], until_ms, ARGV[1])
  if redis.call('PTTL', KEYS[2]) < until_ms - now then
    redis.call('PEXPIRE', KEYS[2], until_ms - now)
  end
end
return 1
"""

# Drop a worker whose heartbeat is older than the cutoff, re-checked here so a worker
# that published since the caller read the heartbeat set is kept.
_PRUNE_WORKER = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s ~= false and tonumber(s) < tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

ADMIT_LUA = (
    _BUCKET_FN
    + _SLOT_FN
    + """
-- rpm/tpm buckets then the concurrency slot, stopping at the first refusal, exactly as
-- the separate calls would. ARGV: nb, now_ms, then (amount, capacity, refill) per
-- bucket, then (request_id, limit, expiry_ms, now_ms) when the slot keys (inflight,
-- released) are given.
-- Returns {0, '0'} when admitted, else {index of the refusing step, wait_s}.
local nb = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
for b = 1, nb do
  local allowed, _, wait = take_bucket(KEYS[b], tonumber(ARGV[3 * b]),
                                       tonumber(ARGV[3 * b + 1]), tonumber(ARGV[3 * b + 2]), now)
  if allowed == 0 then return {b, tostring(wait)} end
end
local s = 3 * nb + 3
if #KEYS > nb then
  if acquire_slot(KEYS[nb + 1], KEYS[nb + 2], ARGV[s], tonumber(ARGV[s + 1]),
                  tonumber(ARGV[s + 2]), tonumber(ARGV[s + 3])) == 0 then
    return {nb + 1, '0'}
  end
end
return {0, '0'}
"""
)
"""The gateway's one-round-trip admission (``RedisStore.admit_script``)."""

_ACQUIRE_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _cancels() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def _deliver_swallowed_cancel(before: int) -> None:
    """Raise the ``CancelledError`` of a cancel request made during a client call
    that the call returned through (only those: cleanup code that runs after a
    delivered cancel keeps working)."""
    if _cancels() > before:
        raise asyncio.CancelledError


class RedisStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client
        self._take = client.register_script(_TAKE_TOKENS)
        self._slot = client.register_script(_ACQUIRE_SLOT)
        self._unslot = client.register_script(_RELEASE_SLOT)
        self._prune = client.register_script(_PRUNE_WORKER)
        self._lease = client.register_script(_ACQUIRE_LEASE)
        self._unlease = client.register_script(_RELEASE_LEASE)
        self.admit_script = client.register_script(ADMIT_LUA)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=1.0,
            socket_timeout=5.0,
            health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        return cls(client)

    @property
    def client(self) -> aioredis.Redis:
        return self._r

    async def _call(self, aw: Awaitable[Any]) -> Any:
        """Await a client call; redis-py's types don't know ``decode_responses``, so
        results are typed at each call site.

        redis-py can swallow a ``Task.cancel()`` that lands at its read-timeout
        boundary (redis/redis-py#2028, #2551): the call returns normally and the task
        runs on, so a loop built on the store could never be stopped. A cancel
        request still pending when the call returns is delivered here instead."""
        before = _cancels()
        try:
            result = await aw
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        _deliver_swallowed_cancel(before)
        return result

    async def ping(self) -> bool:
        before = _cancels()
        try:
            ok = bool(await self._r.ping())
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return False
        _deliver_swallowed_cancel(before)
        return ok

    async def close(self) -> None:
        await self._r.aclose()

    # --- worker telemetry ------------------------------------------------
    async def publish_snapshot(self, snap: WorkerSnapshot) -> None:
        fields = snap.to_redis()
        c = snap.cluster
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(keys.worker_hash(c, snap.worker), mapping=fields)  # type: ignore[arg-type]
        pipe.zadd(keys.workers_zset(c), {snap.worker: snap.ts_ms})
        pipe.xadd(
            keys.telemetry_stream(c),
            fields,  # type: ignore[arg-type]
            maxlen=keys.TELEMETRY_STREAM_MAXLEN,
            approximate=True,
        )
        await self._call(pipe.execute())

    async def get_snapshots(
        self, cluster: str, max_age_ms: int | None = None
    ) -> dict[str, WorkerSnapshot]:
        zkey = keys.workers_zset(cluster)
        beats = await self._call(self._r.zrange(zkey, 0, -1, withscores=True))
        if not beats:
            return {}
        workers = [w for w, _ in beats]
        old: list[str] = []
        cutoff = 0
        if max_age_ms is not None:
            cutoff = int(time.time() * 1000) - max_age_ms
            old = [w for w, ts in beats if ts < cutoff]
            workers = [w for w, ts in beats if ts >= cutoff]
        pipe = self._r.pipeline(transaction=False)
        for w in old:
            await self._prune(
                keys=[zkey, keys.worker_hash(cluster, w)], args=[w, cutoff], client=pipe
            )
        for w in workers:
            pipe.hgetall(keys.worker_hash(cluster, w))
        rows = (await self._call(pipe.execute()))[len(old) :]
        return {w: WorkerSnapshot.from_redis(h) for w, h in zip(workers, rows, strict=True) if h}

    async def list_workers(self, cluster: str) -> dict[str, int]:
        rows = await self._call(self._r.zrange(keys.workers_zset(cluster), 0, -1, withscores=True))
        return {w: int(s) for w, s in rows}

    async def remove_worker(self, cluster: str, worker: str) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(keys.workers_zset(cluster), worker)
        pipe.delete(keys.worker_hash(cluster, worker))
        await self._call(pipe.execute())

    async def _xread(
        self, key: str, last_id: str, count: int, block_ms: int | None
    ) -> list[tuple[str, dict[str, str]]]:
        resp = await self._call(self._r.xread({key: last_id}, count=count, block=block_ms))
        if not resp:
            return []
        return [(eid, fields) for eid, fields in resp[0][1]]

    async def read_telemetry(
        self, cluster: str, last_id: str = "$", count: int = 1000, block_ms: int | None = None
    ) -> list[tuple[str, WorkerSnapshot]]:
        rows = await self._xread(keys.telemetry_stream(cluster), last_id, count, block_ms)
        return [(i, WorkerSnapshot.from_redis(f)) for i, f in rows]

    # --- tenants and keys ------------------------------------------------
    async def _write_and_notify(
        self, key: str, field: str, value: str | None, event: dict[str, Any]
    ) -> int:
        pipe = self._r.pipeline(transaction=True)
        if value is None:
            pipe.hdel(key, field)
        else:
            pipe.hset(key, field, value)
        pipe.publish(keys.EVENTS_CHANNEL, json.dumps(event))
        res = await self._call(pipe.execute())
        return int(res[0])

    async def put_tenant(self, sla: TenantSLA) -> None:
        await self._write_and_notify(
            keys.TENANTS,
            sla.tenant,
            sla.model_dump_json(),
            {"kind": "tenant", "tenant": sla.tenant},
        )

    async def get_tenant(self, tenant: str) -> TenantSLA | None:
        raw = await self._call(self._r.hget(keys.TENANTS, tenant))
        return TenantSLA.model_validate_json(raw) if raw else None

    async def list_tenants(self) -> dict[str, TenantSLA]:
        rows = await self._call(self._r.hgetall(keys.TENANTS))
        return {t: TenantSLA.model_validate_json(raw) for t, raw in rows.items()}

    async def delete_tenant(self, tenant: str) -> bool:
        event = {"kind": "tenant", "tenant": tenant, "deleted": True}
        return await self._write_and_notify(keys.TENANTS, tenant, None, event) > 0

    async def put_api_key(self, key_sha256: str, tenant: str) -> None:
        await self._write_and_notify(keys.APIKEYS, key_sha256, tenant, {"kind": "apikey"})

    async def tenant_for_key(self, key_sha256: str) -> str | None:
        tenant: str | None = await self._call(self._r.hget(keys.APIKEYS, key_sha256))
        return tenant

    async def delete_api_key(self, key_sha256: str) -> bool:
        event = {"kind": "apikey", "deleted": True}
        return await self._write_and_notify(keys.APIKEYS, key_sha256, None, event) > 0

    # --- finished requests ----------------------------------------------
    async def append_requests(self, cluster: str, records: Sequence[RequestRecord]) -> None:
        if not records:
            return
        pipe = self._r.pipeline(transaction=False)
        for r in records:
            pipe.xadd(
                keys.requests_stream(cluster),
                r.to_redis(),  # type: ignore[arg-type]
                maxlen=keys.REQUESTS_STREAM_MAXLEN,
                approximate=True,
            )
        await self._call(pipe.execute())

    async def read_requests(
        self, cluster: str, last_id: str = "0", count: int = 1000, block_ms: int | None = None
    ) -> list[tuple[str, RequestRecord]]:
        rows = await self._xread(keys.requests_stream(cluster), last_id, count, block_ms)
        return [(i, RequestRecord.from_redis(f)) for i, f in rows]

    # --- control state and decisions ------------------------------------
    async def get_control(self, cluster: str) -> dict[str, str]:
        control: dict[str, str] = await self._call(self._r.hgetall(keys.control_hash(cluster)))
        return control

    async def set_control(self, cluster: str, fields: Mapping[str, str]) -> int:
        key = keys.control_hash(cluster)
        pipe = self._r.pipeline(transaction=True)
        if fields:
            pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]
        pipe.hincrby(key, "version", 1)
        res = await self._call(pipe.execute())
        version = int(res[-1])
        await self.publish_event({"kind": "control", "cluster": cluster, "version": version})
        return version

    async def append_decision(self, cluster: str, decision: Mapping[str, Any]) -> str:
        return str(
            await self._call(
                self._r.xadd(
                    keys.decisions_stream(cluster),
                    {"json": json.dumps(dict(decision), default=str)},
                    maxlen=keys.DECISIONS_STREAM_MAXLEN,
                    approximate=True,
                )
            )
        )

    async def read_decisions(
        self, cluster: str, last_id: str = "0", count: int = 1000
    ) -> list[tuple[str, dict[str, Any]]]:
        rows = await self._xread(keys.decisions_stream(cluster), last_id, count, None)
        return [(i, json.loads(f["json"])) for i, f in rows]

    # --- leader lease ----------------------------------------------------
    async def acquire_lease(self, cluster: str, holder: str, ttl_ms: int) -> bool:
        res = await self._call(self._lease(keys=[keys.leader_key(cluster)], args=[holder, ttl_ms]))
        return bool(res)

    async def release_lease(self, cluster: str, holder: str) -> bool:
        res = await self._call(self._unlease(keys=[keys.leader_key(cluster)], args=[holder]))
        return bool(res)

    async def lease_holder(self, cluster: str) -> str | None:
        holder: str | None = await self._call(self._r.get(keys.leader_key(cluster)))
        return holder

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
        allowed, tokens, wait = await self._call(
            self._take(
                keys=[keys.ratelimit_key(cluster, tenant, kind)],
                args=[
                    repr(float(amount)),
                    repr(float(capacity)),
                    repr(float(refill_per_s)),
                    now_ms,
                ],
            )
        )
        wait_s = float(wait)
        return BucketResult(bool(allowed), float(tokens), float("inf") if wait_s < 0 else wait_s)

    async def acquire_slot(
        self, cluster: str, tenant: str, request_id: str, limit: int, lease_ms: int, now_ms: int
    ) -> bool:
        res = await self._call(
            self._slot(
                keys=[keys.inflight_key(cluster, tenant), keys.released_key(cluster, tenant)],
                args=[request_id, limit, now_ms + lease_ms, now_ms],
            )
        )
        return bool(res)

    async def release_slot(
        self, cluster: str, tenant: str, request_id: str, forget_ms: int = 0
    ) -> None:
        if forget_ms <= 0:
            await self._call(self._r.zrem(keys.inflight_key(cluster, tenant), request_id))
            return
        now_ms = int(time.time() * 1000)
        await self._call(
            self._unslot(
                keys=[keys.inflight_key(cluster, tenant), keys.released_key(cluster, tenant)],
                args=[request_id, now_ms + forget_ms, now_ms],
            )
        )

    # --- change notices and audit -------------------------------------------
    async def publish_event(self, event: Mapping[str, Any]) -> None:
        await self._call(self._r.publish(keys.EVENTS_CHANNEL, json.dumps(dict(event))))

    async def subscribe_events(self) -> AsyncIterator[dict[str, Any]]:
        pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        try:
            await self._call(pubsub.subscribe(keys.EVENTS_CHANNEL))
            while True:
                msg = await self._call(pubsub.get_message(timeout=1.0))
                if msg is None or msg.get("type") != "message":
                    continue
                try:
                    event = json.loads(msg["data"])
                except (ValueError, TypeError):
                    event = None
                if isinstance(event, dict):
                    yield event
                else:  # one bad publisher must not end every subscriber's stream
                    log.warning(
                        "skipped a malformed event", extra={"data": repr(msg["data"])[:200]}
                    )
        finally:
            await pubsub.aclose()

    async def append_audit(self, entry: Mapping[str, Any]) -> str:
        return str(
            await self._call(
                self._r.xadd(
                    keys.AUDIT,
                    {"json": json.dumps(dict(entry), default=str)},
                    maxlen=keys.AUDIT_STREAM_MAXLEN,
                    approximate=True,
                )
            )
        )
