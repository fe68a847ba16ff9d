"""The controller on real Redis, fed through the store as the agents and gateways feed
it: an overloaded pool makes it throttle only the lowest-priority tenant; a 2x load
step in the requests stream makes it recommend more replicas."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from controlplane.controller.app import build_controller
from controlplane.controller.loop import Controller
from controlplane.controller.settings import ControllerSettings
from controlplane.profiles import load_profile
from controlplane.state import open_store
from controlplane.state.store import Store
from tests.unit.controller.builders import TENANTS, pool, record

C = "ctl-act"
# requests/s one prefill replica serves at record()'s 512-token prompts, on the profile the
# controller plans with by default
_PROFILE = load_profile(ControllerSettings.model_fields["profile"].default)
PER_REPLICA = 1000 / _PROFILE.prefill_ms(512)
BASE_RPS = 4 * max(1, round(0.55 * PER_REPLICA / 4))  # 12 on cpu-tiny-fixture, 20 on cpu-tiny


def make(url: str, store: Store, **kw: object) -> Controller:
    s = ControllerSettings(
        _env_prefix="SLAPLANE_CTL_IT_UNSET_",  # type: ignore[call-arg]
        redis_url=url, cluster=C, holder="it", tick_s=0.1, **kw,
    )  # fmt: skip
    return build_controller(s, store, CollectorRegistry())


async def _overload(ctl: Controller, store: Store) -> dict[str, str]:
    """12 ticks of deep prefill queues and every tenant missing TTFT (900 ms)."""
    for t in TENANTS.values():
        await store.put_tenant(t)
    n = 0
    for i in range(12):
        now = time.time()
        for s in pool(now, prefill=2, decode=2, waiting=30, seq=i, cluster=C).values():
            await store.publish_snapshot(s)  # deep prefill queues: TTFT far over 500 ms
        recs = [record(n + j, ("gold", "silver", "bronze")[j % 3], ttft_ms=900.0)
                for j in range(10)]  # fmt: skip
        n += len(recs)
        await store.append_requests(C, recs)
        await ctl.reconcile(now)
        await asyncio.sleep(0.05)
    return await store.get_control(C)


async def test_with_priority_queueing_a_ttft_breach_scales_instead_of_shedding(
    redis_url: str,
) -> None:
    """Default (gateways hold lower classes behind gold's TTFT target): gold's TTFT
    breach on a P/D pool cannot come from bronze's queue, so nobody is shed (that would
    drop servable requests); the risk stays visible for the planner's breach-risk path."""
    store = open_store(redis_url)
    ctl = make(redis_url, store)
    try:
        control = await _overload(ctl, store)
        assert all(float(v) == 1.0 for k, v in control.items() if k.startswith("admit:"))
        decisions = [d for _, d in await store.read_decisions(C)]
        assert not [d for d in decisions if d["kind"] == "admit"]
        breach = ctl.metrics.registry.get_sample_value(
            "slaplane_predicted_sla_breach_probability",
            {"cluster": C, "tenant": "gold", "slo": "ttft"},
        )
        assert breach is not None and breach > 0.5  # the risk is seen, and left to scaling
    finally:
        await store.close()


async def test_premium_at_risk_throttles_only_the_batch_tenant(
    redis_url: str, tmp_path: Path
) -> None:
    """FIFO gateways (``priority_queueing`` off): bronze's queued work delays gold, so
    gold's TTFT breach sheds bronze, and only bronze."""
    store = open_store(redis_url)
    (tmp_path / "policy.json").write_text(json.dumps({"priority_queueing": False}))
    ctl = make(redis_url, store, policy_config=str(tmp_path / "policy.json"))
    try:
        control = await _overload(ctl, store)
        assert float(control["admit:bronze"]) < 1.0
        assert float(control.get("admit:silver", "1")) == 1.0
        assert float(control.get("admit:gold", "1")) == 1.0
        admits = [d for _, d in await store.read_decisions(C) if d["kind"] == "admit"]
        assert admits and {d["target"] for d in admits} == {"bronze"}
        assert admits[0]["reason"] == "shed_for_higher_priority"
        assert admits[0]["inputs"]["breach_above"]["gold"] > 0.5
        reg = ctl.metrics.registry
        assert reg.get_sample_value(
            "slaplane_admission_fraction", {"cluster": C, "tenant": "bronze"}
        ) == float(control["admit:bronze"])
        breach = reg.get_sample_value(
            "slaplane_predicted_sla_breach_probability",
            {"cluster": C, "tenant": "gold", "slo": "ttft"},
        )
        assert breach is not None and breach > 0.5
    finally:
        await store.close()


async def test_two_x_load_step_recommends_scale_up(redis_url: str) -> None:
    store = open_store(redis_url)
    ctl = make(redis_url, store, interval_s=1.0)
    for t in TENANTS.values():
        await store.put_tenant(t)
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    n = 0
    try:
        t0 = time.monotonic()
        step_at = None
        while time.monotonic() - t0 < 90.0:  # generous: a loaded host only ticks later
            elapsed = time.monotonic() - t0
            rate = BASE_RPS if elapsed < 5.0 else 2 * BASE_RPS  # ~0.55x, then ~1.1x a replica
            if rate > BASE_RPS and step_at is None:
                step_at = time.monotonic()
            for s in pool(time.time(), prefill=1, decode=1, cluster=C).values():
                await store.publish_snapshot(s)
            recs = [record(n + j, "silver") for j in range(rate // 4)]
            n += len(recs)
            await store.append_requests(C, recs)
            ups = [d for _, d in await store.read_decisions(C)
                   if d["kind"] == "scale" and d["target"] == "prefill"]  # fmt: skip
            if ups:
                break
            await asyncio.sleep(0.25)
        assert ups, "no scale-up recommendation"
        assert step_at is not None
        up = ups[0]
        assert up["value"] == 2 and up["reason"] in ("forecast", "breach_risk")
        assert up["inputs"]["need"] > 1.0
        reg = ctl.metrics.registry
        await asyncio.sleep(0.3)
        assert (
            reg.get_sample_value("slaplane_desired_replicas", {"cluster": C, "role": "prefill"})
            == 2
        )
        acts = [d for _, d in await store.read_decisions(C) if d["kind"] == "actuate"]
        assert acts and acts[-1]["target"] == "advisory" and acts[-1]["value"]["prefill"] == 2
    finally:
        stop.set()
        await task
        await store.close()
