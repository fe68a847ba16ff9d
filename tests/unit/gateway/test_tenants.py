"""Tenant directory: cache invalidation keeps last-known answers for store outages."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controlplane.errors import Unauthorized
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.tenants import TenantDirectory, key_sha256
from controlplane.schemas import TenantSLA
from controlplane.state.memory import MemoryStore
from controlplane.state.store import StoreUnavailable


class FlakyStore(MemoryStore):
    """A memory store whose reads can be switched off, like Redis restarting."""

    down = False

    async def tenant_for_key(self, key_sha256: str) -> str | None:
        if self.down:
            raise StoreUnavailable("down")
        return await super().tenant_for_key(key_sha256)

    async def get_tenant(self, tenant: str) -> Any:
        if self.down:
            raise StoreUnavailable("down")
        return await super().get_tenant(tenant)


async def test_invalidated_entries_serve_while_store_is_down_and_revoke_when_back() -> None:
    store = FlakyStore()
    sla = TenantSLA(tenant="acme", ttft_ms=500)
    await store.put_tenant(sla)
    await store.put_api_key(key_sha256("sk-1"), "acme")
    d = TenantDirectory(store, GatewayMetrics(CollectorRegistry(), "c"), ttl_s=60)
    assert await d.tenant_for_key("sk-1") == "acme"
    assert await d.sla_for("acme") == sla

    d.invalidate()  # an event arrives ...
    store.down = True  # ... while the store is restarting
    assert await d.tenant_for_key("sk-1") == "acme"
    assert await d.sla_for("acme") == sla

    store.down = False
    await store.delete_api_key(key_sha256("sk-1"))
    d.invalidate()
    with pytest.raises(Unauthorized):
        await d.tenant_for_key("sk-1")
