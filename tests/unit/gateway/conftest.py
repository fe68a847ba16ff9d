"""Shared by the gateway tests: a memory store with tenant ``acme`` and its API key."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from controlplane.schemas import TenantSLA
from controlplane.state import open_store
from controlplane.state.store import Store

KEY = "sk-test-acme"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def mem() -> AsyncIterator[Store]:
    s = open_store("memory://")
    await s.put_tenant(TenantSLA(tenant="acme", ttft_ms=5000, itl_ms=500))
    await s.put_api_key(hashlib.sha256(KEY.encode()).hexdigest(), "acme")
    yield s
    await s.close()
