"""The live loop on the in-memory store: leader-only actuation, write-on-change,
decisions streamed, store outage stops acting and shows in metrics."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from controlplane.controller.leader import LeaderElector
from controlplane.controller.loop import Controller
from controlplane.controller.metrics import ControllerMetrics
from controlplane.state.memory import MemoryStore
from controlplane.state.store import Store
from tests.unit.controller.builders import TENANTS, planner, pool, record, worker
from tests.unit.controller.fakes import FlakyStore, RecordingActuator

C = "c"


def controller(store: Store, holder: str = "a", **kw: object) -> Controller:
    reg = CollectorRegistry()
    act = RecordingActuator()
    return Controller(
        store, C, planner(), act, ControllerMetrics(reg, C), LeaderElector(store, C, holder, 3000)
    )


def sample(ctl: Controller, name: str, **labels: str) -> float | None:
    return ctl.metrics.registry.get_sample_value(name, {"cluster": C, **labels})


async def seed(store: Store, now: float, **kw: object) -> None:
    for t in TENANTS.values():
        await store.put_tenant(t)
    for s in pool(now, **kw).values():  # type: ignore[arg-type]
        await store.publish_snapshot(s)


async def test_leader_writes_control_once_and_streams_decisions() -> None:
    store = MemoryStore()
    ctl = controller(store)
    now = 10_000.0
    await seed(store, now)
    await store.publish_snapshot(worker("d1", "decode", now, kv_usage=0.99))
    r = await ctl.reconcile(now)
    assert r.leader and r.error is None and r.requeue_after_s <= 1.0
    control = await store.get_control(C)
    assert control["weight:d1"] == "0.000" and control["version"] == "1"
    decisions = [d for _, d in await store.read_decisions(C)]
    assert {"route", "control"} <= {d["kind"] for d in decisions}
    route = next(d for d in decisions if d["kind"] == "route")
    assert route["target"] == "d1" and route["reason"] == "kv_full" and route["holder"] == "a"
    assert route["inputs"]["kv_usage"] == 0.99
    await ctl.reconcile(now + 1)  # nothing changed: no write, no version bump
    assert (await store.get_control(C))["version"] == "1"
    assert sample(ctl, "slaplane_controller_is_leader") == 1.0
    assert sample(ctl, "slaplane_route_weight", worker="d1") == 0.0
    assert sample(ctl, "slaplane_controller_reconcile_total", result="leader") == 2.0


async def test_standby_computes_but_never_writes() -> None:
    store = MemoryStore()
    leader, standby = controller(store, "a"), controller(store, "b")
    now = 10_000.0
    await seed(store, now)
    await store.publish_snapshot(worker("d1", "decode", now, kv_usage=0.99))
    assert (await leader.reconcile(now)).leader
    await store.set_control(C, {"weight:d1": "1.000"})  # an edit the standby would revert
    r = await standby.reconcile(now)
    assert not r.leader and r.effects is not None and r.effects.route_weights["d1"] == 0.0
    assert (await store.get_control(C))["weight:d1"] == "1.000"
    assert sample(standby, "slaplane_controller_is_leader") == 0.0
    assert sample(standby, "slaplane_controller_reconcile_total", result="standby") == 1.0


async def test_store_outage_stops_acting_and_reports_it() -> None:
    store = FlakyStore()
    ctl = controller(store)
    now = 10_000.0
    await seed(store, now)
    assert (await ctl.reconcile(now)).leader
    store.down = True
    r = await ctl.reconcile(now + 1)
    assert not r.leader and r.error == "store_unavailable" and r.requeue_after_s > 0
    assert not ctl.elector.is_leader()
    assert sample(ctl, "slaplane_controller_is_leader") == 0.0
    assert sample(ctl, "slaplane_controller_store_up") == 0.0
    store.down = False
    assert (await ctl.reconcile(now + 2)).leader
    assert sample(ctl, "slaplane_controller_store_up") == 1.0


async def test_scale_targets_go_to_the_actuator_only_on_change() -> None:
    store = MemoryStore()
    ctl = controller(store)
    await seed(store, 10_000.0)
    act = ctl.actuator
    assert isinstance(act, RecordingActuator)
    for i in range(25):
        now = 10_000.0 + i
        await store.append_requests(C, [record(i * 100 + j, "silver") for j in range(5)])
        for s in pool(now).values():
            await store.publish_snapshot(s)
        await ctl.reconcile(now)
    assert len(act.applied) == 1  # first decision; same targets are not re-sent
    assert act.applied[0].desired == {"decode": 2, "prefill": 2}
    actuate = [d for _, d in await store.read_decisions(C) if d["kind"] == "actuate"]
    assert actuate and actuate[0]["reason"] == "ok"
    assert sample(ctl, "slaplane_desired_replicas", role="prefill") == 2.0


async def test_run_loop_stops_and_releases_the_lease() -> None:
    store = MemoryStore()
    ctl = controller(store)
    await seed(store, 10_000.0)
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    for _ in range(100):
        if await store.lease_holder(C) == "a":
            break
        await asyncio.sleep(0.01)
    assert await store.lease_holder(C) == "a"
    ctl.wake()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert await store.lease_holder(C) is None
