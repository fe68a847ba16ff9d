"""Builders shared by the policy unit tests."""

from __future__ import annotations

from typing import Any

from controlplane.policy.types import ClusterView, RouteRequest, build_pools
from controlplane.schemas import Priority, WorkerSnapshot

NOW_S = 1_000.0


def snap(worker: str, role: str = "both", **kw: Any) -> WorkerSnapshot:
    kw.setdefault("ts_ms", int(NOW_S * 1000) - 100)
    kw.setdefault("model", "m")
    return WorkerSnapshot(cluster="c", worker=worker, role=role, **kw)


def view(*snaps: WorkerSnapshot, **kw: Any) -> ClusterView:
    ws = {s.worker: s for s in snaps}
    return ClusterView(ws, pools=build_pools(ws), **kw)


def req(prompt: int = 256, max_tokens: int = 64, **kw: Any) -> RouteRequest:
    kw.setdefault("priority", Priority.STANDARD)
    return RouteRequest("r1", "t", kw.pop("model", "m"), prompt, max_tokens, **kw)
