"""The store interface every process talks to; Redis in production, memory in-process.

Narrow on purpose: each method is one logical operation, and the Redis
implementation does each in a single round trip (pipeline or Lua).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from controlplane.policy.request.admission.buckets import BucketResult
from controlplane.schemas import RequestRecord, TenantSLA, WorkerSnapshot


class StoreUnavailable(Exception):
    """The backing store cannot be reached; callers decide whether to fail open."""


@runtime_checkable
class Store(Protocol):
    # --- lifecycle -------------------------------------------------------
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...

    # --- worker telemetry ------------------------------------------------
    async def publish_snapshot(self, snap: WorkerSnapshot) -> None:
        """Latest-state hash + heartbeat zset + capped telemetry stream, one round trip."""
        ...

    async def get_snapshots(
        self, cluster: str, max_age_ms: int | None = None
    ) -> dict[str, WorkerSnapshot]:
        """Latest snapshot per worker. With ``max_age_ms``, workers whose heartbeat is
        older are left out and removed from the hash and heartbeat set (atomically per
        worker, so one that published meanwhile stays)."""
        ...

    async def list_workers(self, cluster: str) -> dict[str, int]:
        """worker id → last-seen ms."""
        ...

    async def remove_worker(self, cluster: str, worker: str) -> None: ...

    async def read_telemetry(
        self, cluster: str, last_id: str = "$", count: int = 1000, block_ms: int | None = None
    ) -> list[tuple[str, WorkerSnapshot]]:
        """Snapshots appended after ``last_id`` (``"$"`` = only new ones); blocks up to
        ``block_ms`` when none are there yet. Lets readers follow telemetry as a push feed."""
        ...

    # --- tenants and keys ------------------------------------------------
    async def put_tenant(self, sla: TenantSLA) -> None: ...
    async def get_tenant(self, tenant: str) -> TenantSLA | None: ...
    async def list_tenants(self) -> dict[str, TenantSLA]: ...
    async def delete_tenant(self, tenant: str) -> bool: ...
    async def put_api_key(self, key_sha256: str, tenant: str) -> None: ...
    async def tenant_for_key(self, key_sha256: str) -> str | None: ...
    async def delete_api_key(self, key_sha256: str) -> bool: ...

    # --- finished requests ----------------------------------------------
    async def append_requests(self, cluster: str, records: Sequence[RequestRecord]) -> None: ...
    async def read_requests(
        self, cluster: str, last_id: str = "0", count: int = 1000, block_ms: int | None = None
    ) -> list[tuple[str, RequestRecord]]: ...

    # --- control state and decisions ------------------------------------
    async def get_control(self, cluster: str) -> dict[str, str]: ...
    async def set_control(self, cluster: str, fields: Mapping[str, str]) -> int:
        """Merge ``fields`` into the control hash, bump and return its version, and
        publish a change notice."""
        ...

    async def append_decision(self, cluster: str, decision: Mapping[str, Any]) -> str: ...
    async def read_decisions(
        self, cluster: str, last_id: str = "0", count: int = 1000
    ) -> list[tuple[str, dict[str, Any]]]: ...

    # --- leader lease ----------------------------------------------------
    async def acquire_lease(self, cluster: str, holder: str, ttl_ms: int) -> bool:
        """Take the lease if free or renew it if ``holder`` already has it."""
        ...

    async def release_lease(self, cluster: str, holder: str) -> bool: ...
    async def lease_holder(self, cluster: str) -> str | None: ...

    # --- admission primitives (atomic across gateway replicas) ------------
    async def take_tokens(
        self,
        cluster: str,
        tenant: str,
        kind: str,
        amount: float,
        capacity: float,
        refill_per_s: float,
        now_ms: int,
    ) -> BucketResult: ...

    async def acquire_slot(
        self, cluster: str, tenant: str, request_id: str, limit: int, lease_ms: int, now_ms: int
    ) -> bool: ...

    async def release_slot(
        self, cluster: str, tenant: str, request_id: str, forget_ms: int = 0
    ) -> None:
        """Idempotent. With ``forget_ms`` > 0 the id also cannot be acquired for that long,
        so an acquire the server runs after this release (its caller timed out) is void."""
        ...

    # --- change notices and audit -------------------------------------------
    async def publish_event(self, event: Mapping[str, Any]) -> None: ...
    def subscribe_events(self) -> AsyncIterator[dict[str, Any]]: ...
    async def append_audit(self, entry: Mapping[str, Any]) -> str: ...
