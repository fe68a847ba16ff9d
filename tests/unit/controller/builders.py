"""Builders for controller and controller-policy tests: workers, tenants, records."""

from __future__ import annotations

from typing import Any

from controlplane.policy.planner.control_planner import ControlPlanner, ControlPolicyConfig
from controlplane.policy.planner.scale import EngineLimits
from controlplane.policy.predictor import ProfilePredictor
from controlplane.profiles import CPU_TINY_FIXTURE
from controlplane.schemas import Priority, RequestRecord, TenantSLA, WorkerSnapshot

NOW_S = 10_000.0


def worker(name: str, role: str = "prefill", now_s: float = NOW_S, **kw: Any) -> WorkerSnapshot:
    kw.setdefault("ts_ms", int(now_s * 1000) - 100)
    kw.setdefault("model", "m")
    kw.setdefault("seq", int(now_s))
    kw.setdefault("cluster", "c")
    return WorkerSnapshot(worker=name, role=role, **kw)


def pool(
    now_s: float = NOW_S, prefill: int = 2, decode: int = 2, **kw: Any
) -> dict[str, WorkerSnapshot]:
    ws = [worker(f"p{i}", "prefill", now_s, **kw) for i in range(prefill)]
    ws += [worker(f"d{i}", "decode", now_s, **kw) for i in range(decode)]
    return {w.worker: w for w in ws}


def tenant(
    name: str, priority: Priority, ttft_ms: float = 1000.0, itl_ms: float = 50.0, **kw: Any
) -> TenantSLA:
    return TenantSLA(tenant=name, priority=priority, ttft_ms=ttft_ms, itl_ms=itl_ms, **kw)


TENANTS = {
    "gold": tenant("gold", Priority.PREMIUM, 500.0, 30.0),
    "silver": tenant("silver", Priority.STANDARD, 1500.0, 50.0),
    "bronze": tenant("bronze", Priority.BATCH, 5000.0, 100.0),
}


def record(i: int, tenant: str = "gold", **kw: Any) -> RequestRecord:
    kw.setdefault("prompt_tokens", 512)
    kw.setdefault("output_tokens", 64)
    kw.setdefault("outcome", "ok")
    kw.setdefault("ttft_ms", 100.0)
    kw.setdefault("tpot_ms", 10.0)
    return RequestRecord(request_id=f"r{i}", tenant=tenant, model="m", arrival_ms=0, **kw)


def planner(**overrides: Any) -> ControlPlanner:
    cfg = ControlPolicyConfig.model_validate(overrides)
    return ControlPlanner(cfg, ProfilePredictor(CPU_TINY_FIXTURE), CPU_TINY_FIXTURE, EngineLimits())
