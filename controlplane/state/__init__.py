"""Store interface and implementations; ``open_store(url)`` picks one by URL scheme."""

from __future__ import annotations

from controlplane.policy.request.admission.buckets import BucketResult
from controlplane.state.store import Store, StoreUnavailable

__all__ = ["BucketResult", "Store", "StoreUnavailable", "open_store"]


def open_store(url: str) -> Store:
    """``memory://`` → in-process store; ``redis://``/``rediss://``/``unix://`` → Redis."""
    if url.startswith("memory://"):
        from controlplane.state.memory import MemoryStore

        return MemoryStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from controlplane.state.redis_store import RedisStore

        return RedisStore.from_url(url)
    raise ValueError(f"unsupported store URL {url!r}: use memory:// or redis://host:port/db")
