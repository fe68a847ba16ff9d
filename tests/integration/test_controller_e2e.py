"""Done-when of issue 5, end to end: real Redis, the local actuator starting real
``slaplane sim-worker`` processes with their agents, the gateway discovering them from
telemetry, and the controller. A sustained overload makes the controller add a worker
and throttle only the batch tenant; when the load stops it drains and removes the
worker. Every step is in the decisions stream and in metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from controlplane.controller.actuators.local import LocalActuator, LocalParams
from controlplane.controller.app import build_controller
from controlplane.controller.settings import ControllerSettings
from controlplane.gateway.testing import running_gateway
from controlplane.profiles import load_profile
from controlplane.schemas import Priority, TenantSLA
from controlplane.state import open_store

pytestmark = pytest.mark.slow
C = "e2e"
PROFILE = load_profile(LocalParams().profile)  # the actuator's workers (and the default
# of the gateway and controller below)


def _prompt(prefill_s: float) -> str:
    """The filler repeated until its prefill (in chunks, as the sim runs it) costs
    ``prefill_s`` on PROFILE, so the load below overloads one worker on any profile."""
    budget = PROFILE.max_num_batched_tokens
    for reps in range(10, 800):
        n = 2 + 5 * reps  # BOS + the unique first word + 5 words a repeat
        chunks = [budget] * (n // budget) + [n % budget]
        if sum(PROFILE.prefill_ms(c) for c in chunks if c) >= 1000 * prefill_s:
            return "lorem ipsum dolor sit amet " * reps
    raise AssertionError(f"{PROFILE.name}: no prompt under 4k tokens costs {prefill_s} s")


# ~0.15 s of prefill each: 1.5k tokens on cpu-tiny-fixture, 2.6k on cpu-tiny
PROMPT = _prompt(0.15)
_ids = iter(range(1_000_000))
POLICY = {
    "tick_s": 0.5,
    "breach": {"horizon_s": 10},
    "throttle": {"decrease_interval_s": 2, "increase_interval_s": 2},
    "scale": {"roles": ["both"], "interval_s": 2, "min_replicas": 1, "max_replicas": 2,
              "up_cooldown_s": 2, "down_stable_s": 8, "down_cooldown_s": 8,
              "drain_timeout_s": 20},
}  # fmt: skip


async def send(session: aiohttp.ClientSession, url: str, tenant: str, out: list[int]) -> None:
    # a unique first word: no prefix-cache hits, every prompt costs its full prefill
    body = {"model": "tiny-llama", "prompt": f"req{next(_ids)} {PROMPT}", "max_tokens": 8}
    try:
        async with session.post(
            url + "/v1/completions", json=body, headers={"X-Tenant-ID": tenant}
        ) as r:
            await r.read()
            out.append(r.status)
    except (aiohttp.ClientError, TimeoutError):
        out.append(0)


async def decisions(store: Any) -> list[dict[str, Any]]:
    return [d for _, d in await store.read_decisions(C, count=100_000)]


async def wait_decision(store: Any, pred: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for d in await decisions(store):
            if pred(d):
                return d
        await asyncio.sleep(0.25)
    kinds = [(d["kind"], d["target"], d["value"], d["reason"]) for d in await decisions(store)]
    raise AssertionError(f"decision not seen; stream: {kinds[-40:]}")


def print_timeline(ds: list[dict[str, Any]], t_load: float, recs: list[Any]) -> None:
    """What happened when (``pytest -s`` shows it; benchmarks/RESULTS.md quotes it)."""
    for d in ds:
        if d["kind"] in ("scale", "admit", "drain", "actuate"):
            print(f"t={d['ts_s'] - t_load:+6.1f}s {d['kind']:7} {d['target']:14} "
                  f"{d['value']!s:24} {d['reason']}")  # fmt: skip
    for tenant in ("gold", "bronze"):
        mine = [r for _, r in recs if r.tenant == tenant]
        met = sum(1 for r in mine if r.sla_met)
        why = Counter(r.reason for r in mine if r.outcome == "rejected")
        print(f"{tenant}: {len(mine)} requests, {met} met SLA, "
              f"{sum(why.values())} rejected {dict(why)}")  # fmt: skip


async def test_overload_adds_a_worker_throttles_batch_then_scales_back(
    redis_url: str, tmp_path: Path
) -> None:
    store = open_store(redis_url)
    await store.put_tenant(TenantSLA(tenant="gold", priority=Priority.PREMIUM, ttft_ms=1500,
                                     itl_ms=500, objective=0.95))  # fmt: skip
    await store.put_tenant(TenantSLA(tenant="bronze", priority=Priority.BATCH, ttft_ms=30_000,
                                     itl_ms=1000))  # fmt: skip
    (tmp_path / "policy.json").write_text(json.dumps(POLICY))
    settings = ControllerSettings(
        _env_prefix="SLAPLANE_CTL_IT_UNSET_",  # type: ignore[call-arg]
        redis_url=redis_url, cluster=C, holder="e2e", policy_config=str(tmp_path / "policy.json"),
    )  # fmt: skip
    act = LocalActuator(LocalParams(cluster=C, redis_url=redis_url, log_dir=str(tmp_path)))
    registry = CollectorRegistry()
    ctl = build_controller(settings, store, registry, actuator=act)
    stop = asyncio.Event()
    loop_task = asyncio.create_task(ctl.run(stop))
    try:
        await wait_decision(store, lambda d: d["kind"] == "actuate", 20)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if await store.get_snapshots(C):
                break
            await asyncio.sleep(0.2)
        assert await store.get_snapshots(C), "the first worker never published telemetry"
        async with (
            running_gateway(store, cluster=C, trust_tenant_header=True, require_key=False,
                            profile=PROFILE.name, resync_s=0.5) as gw,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        ):  # fmt: skip
            statuses: dict[str, list[int]] = {"gold": [], "bronze": []}
            pending: set[asyncio.Task[None]] = set()
            t0 = time.monotonic()
            t_load = time.time()
            while time.monotonic() - t0 < 25.0:  # ~3 gold + 6 bronze req/s: ~2x one worker
                for tenant, n in (("gold", 1), ("bronze", 2)):
                    for _ in range(n):
                        t = asyncio.create_task(send(session, gw.url, tenant, statuses[tenant]))
                        pending.add(t)
                        t.add_done_callback(pending.discard)
                await asyncio.sleep(0.33)
            up = await wait_decision(
                store,
                lambda d: d["kind"] == "scale" and d["target"] == "both" and d["value"] == 2,
                5,
            )
            shed = [d for d in await decisions(store) if d["kind"] == "admit" and d["value"] < 1]
            assert shed and {d["target"] for d in shed} == {"bronze"}, shed
            assert len(act.workers["both"]) == 2
            control = await store.get_control(C)
            assert float(control.get("admit:gold", "1")) == 1.0
            await asyncio.gather(*pending, return_exceptions=True)
        assert statuses["gold"].count(200) > 0
        assert up["reason"] in ("forecast", "breach_risk")
        # load is gone: the controller drains a worker and removes it
        drain = await wait_decision(store, lambda d: d["kind"] == "drain", 60)
        done = await wait_decision(
            store, lambda d: d["kind"] == "scale" and str(d["reason"]).startswith("drained"), 40
        )
        assert done["value"] == 1 and done["inputs"]["worker"] == drain["target"]
        removed = await wait_decision(
            store,
            lambda d: d["kind"] == "actuate" and drain["target"] in d["inputs"]["removed"],
            10,
        )
        assert removed["reason"] == "ok" and len(act.workers["both"]) == 1
        assert drain["target"] not in await store.get_snapshots(C)
        print_timeline(await decisions(store), t_load, await store.read_requests(C, "0", 100_000))
        value = registry.get_sample_value
        assert value("slaplane_desired_replicas", {"cluster": C, "role": "both"}) == 1
        assert value("slaplane_controller_is_leader", {"cluster": C}) == 1
        assert (value("slaplane_controller_decisions_total",
                      {"cluster": C, "kind": "admit", "reason": "shed_for_higher_priority"})
                or 0) >= 1  # fmt: skip
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(loop_task, 10)
        await act.close()
        await store.close()
