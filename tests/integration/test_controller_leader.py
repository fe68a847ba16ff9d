"""Two controllers on real Redis: one leads; when it dies the standby takes over
within the lease; a controller that loses Redis stops acting and says so."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from controlplane.controller.app import build_controller
from controlplane.controller.loop import Controller
from controlplane.controller.settings import ControllerSettings
from controlplane.state import open_store
from controlplane.state.store import Store
from tests.conftest import RedisServer
from tests.unit.controller.builders import pool

C = "ctl-it"


def make(url: str, holder: str, store: Store, ttl_ms: int = 1000) -> Controller:
    s = ControllerSettings(
        _env_prefix="SLAPLANE_CTL_IT_UNSET_",  # type: ignore[call-arg]
        redis_url=url, cluster=C, holder=holder, tick_s=0.1, lease_ttl_ms=ttl_ms,
    )  # fmt: skip
    return build_controller(s, store, CollectorRegistry())


def leader_gauge(c: Controller) -> float | None:
    return c.metrics.registry.get_sample_value("slaplane_controller_is_leader", {"cluster": C})


async def wait_for(pred: object, timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():  # type: ignore[operator]
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_standby_takes_over_within_the_lease(redis_url: str) -> None:
    sa, sb, probe = open_store(redis_url), open_store(redis_url), open_store(redis_url)
    a, b = make(redis_url, "a", sa), make(redis_url, "b", sb)
    for s in pool(time.time(), cluster=C).values():
        await probe.publish_snapshot(s)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    ta = asyncio.create_task(a.run(stop_a))
    await wait_for(lambda: a.elector.is_leader(), 3.0)
    tb = asyncio.create_task(b.run(stop_b))
    await asyncio.sleep(0.5)
    assert not b.elector.is_leader() and leader_gauge(b) == 0.0
    assert await probe.lease_holder(C) == "a"

    async def no_release() -> None:  # a crash: the lease is not given back
        return None

    a.elector.release = no_release  # type: ignore[method-assign]
    ta.cancel()  # bounded: a swallowed cancel (see RedisStore._call) fails, not hangs
    await asyncio.wait_for(asyncio.gather(ta, return_exceptions=True), 5.0)
    # b takes over once a's lease expires (failover time is a benchmark's job, not a test's)
    await wait_for(lambda: b.elector.is_leader(), 30.0)
    await wait_for(lambda: leader_gauge(b) == 1.0, 30.0)
    assert await probe.lease_holder(C) == "b"
    stop_b.set()
    await asyncio.wait_for(tb, 5.0)
    assert await probe.lease_holder(C) is None  # graceful stop releases at once
    for s in (sa, sb, probe):
        await s.close()


async def test_losing_redis_stops_acting_and_is_reported(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path)
    srv.start()
    store = open_store(srv.url)
    ctl = make(srv.url, "a", store)
    try:
        now = time.time()
        for s in pool(now, cluster=C).values():
            await store.publish_snapshot(s)
        assert (await ctl.reconcile(now)).leader
        srv.stop()
        r = await ctl.reconcile(now + 1)
        assert not r.leader and r.error == "store_unavailable"
        reg = ctl.metrics.registry
        assert reg.get_sample_value("slaplane_controller_store_up", {"cluster": C}) == 0.0
        assert leader_gauge(ctl) == 0.0
        srv.start()
        for _ in range(50):
            if (await ctl.reconcile(time.time())).leader:
                break
            await asyncio.sleep(0.1)
        assert ctl.elector.is_leader()
        assert reg.get_sample_value("slaplane_controller_store_up", {"cluster": C}) == 1.0
    finally:
        await store.close()
        srv.stop()
