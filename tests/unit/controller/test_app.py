"""Settings → policy config and actuator params (flags over file over defaults)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.controller.app import actuator_params, build_core, policy_config
from controlplane.controller.settings import ControllerSettings


def settings(**kw: object) -> ControllerSettings:
    return ControllerSettings(_env_prefix="SLAPLANE_CTL_TEST_UNSET_", **kw)  # type: ignore[call-arg]


def test_file_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text(
        json.dumps({"scale": {"max_replicas": 5, "interval_s": 7}, "breach": {"horizon_s": 10}})
    )
    cfg = policy_config(settings(policy_config=str(f), max_replicas=3, roles="both"))
    assert cfg.scale.max_replicas == 3 and cfg.scale.interval_s == 7
    assert cfg.breach.horizon_s == 10 and cfg.scale.roles == ("both",)


def test_actuator_params_are_checked() -> None:
    with pytest.raises(ValueError, match="webhook-url"):
        actuator_params(settings(actuator="webhook"))
    with pytest.raises(ValueError, match="k8s-targets"):
        actuator_params(settings(actuator="kubernetes"))
    p = actuator_params(
        settings(actuator="kubernetes", k8s_targets="prefill=deployment/p,decode=statefulset/d")
    )
    assert p["targets"] == {"prefill": "deployment/p", "decode": "statefulset/d"}
    assert p["request_timeout_s"] == 10.0
    p = actuator_params(
        settings(actuator="kubernetes", k8s_targets="both=deployment/b", k8s_request_timeout_s=2.5)
    )
    assert p["request_timeout_s"] == 2.5
    assert actuator_params(settings(actuator="local", local_no_agent=True))["agent_cmd"] is None


def test_core_uses_the_sim_profile_limits() -> None:
    core = build_core(settings(profile="h100-llama3.1-8b"))
    assert core.scaler.limits.kv_capacity_tokens > 400_000


async def test_tenant_notice_wakes_the_controller() -> None:
    import asyncio

    from prometheus_client import CollectorRegistry

    from controlplane.controller.app import build_controller, wake_on_tenant_changes
    from controlplane.schemas import Priority, TenantSLA
    from controlplane.state.memory import MemoryStore

    store = MemoryStore()
    ctl = build_controller(settings(redis_url="memory://"), store, CollectorRegistry())
    task = asyncio.create_task(wake_on_tenant_changes(ctl, store))
    await asyncio.sleep(0.01)
    await store.set_control("default", {"admit:x": "0.5"})  # own writes do not wake
    await asyncio.sleep(0.01)
    assert not ctl._wake.is_set()
    await store.put_tenant(TenantSLA(tenant="x", priority=Priority.BATCH))
    await asyncio.sleep(0.01)
    assert ctl._wake.is_set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
