"""Gateway against in-process sim workers and the memory store: auth, errors, P/D, relay."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from controlplane.gateway.testing import GatewayHandle, running_gateway, until
from controlplane.schemas import RateLimit, TenantSLA, WorkerSnapshot
from controlplane.state import open_store
from controlplane.state.memory import MemoryStore
from controlplane.state.store import Store, StoreUnavailable
from tests.unit.gateway.conftest import AUTH
from workers.sim.testing import running_sim


@pytest.fixture
async def pd(mem: Store) -> AsyncIterator[GatewayHandle]:
    async with (
        running_sim(role="prefill", time_scale=20, fixed_created=1) as p,
        running_sim(role="decode", time_scale=20, fixed_created=1) as d,
        running_gateway(mem, prefill_url=[p.url], decode_url=[d.url]) as gw,
    ):
        yield gw


async def _post(gw: GatewayHandle, body: object, headers: dict[str, str] | None = None,
                path: str = "/v1/completions") -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + path, data=json.dumps(body), headers=headers or AUTH) as r,
    ):
        return r.status, await r.read(), dict(r.headers)


async def test_pd_stream_and_metrics(pd: GatewayHandle) -> None:
    body = {"model": "tiny-llama", "prompt": "hello " * 100, "max_tokens": 8, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    status, raw, _ = await _post(pd, body)
    assert status == 200, raw
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    usage = json.loads(events[-2][6:])["usage"]
    assert usage["completion_tokens"] == 8
    reg = pd.gateway.registry
    labels = {"cluster": "default", "model": "tiny-llama", "tenant": "acme"}
    assert reg.get_sample_value("slaplane_request_ttft_seconds_count", labels) == 1
    assert reg.get_sample_value("slaplane_request_itl_seconds_count", labels) == 7
    assert (
        reg.get_sample_value(
            "slaplane_sla_requests_total", {**labels, "slo": "all", "result": "met"}
        )
        == 1
    )
    routes = {"cluster": "default", "model": "tiny-llama", "policy": "sla"}
    assert (
        sum(
            reg.get_sample_value(
                "slaplane_route_decisions_total", {**routes, "role": r, "worker": w}
            )
            or 0
            for r in ("prefill", "decode")
            for w in pd.gateway.state.workers
        )
        == 2
    )


async def test_non_stream_chat(pd: GatewayHandle) -> None:
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4}  # fmt: skip
    status, raw, _ = await _post(pd, body, path="/v1/chat/completions")
    assert status == 200, raw
    obj = json.loads(raw)
    assert obj["object"] == "chat.completion" and obj["usage"]["completion_tokens"] == 4


async def test_non_stream_tpot_is_generation_time_per_token(pd: GatewayHandle) -> None:
    """All tokens reach the client at once, but TPOT is the decode request's time per
    token, not 0 (which let any decode speed meet every ITL target)."""
    body = {"model": "tiny-llama", "prompt": "hello " * 50, "max_tokens": 8}
    status, raw, _ = await _post(pd, body)
    assert status == 200 and json.loads(raw)["usage"]["completion_tokens"] == 8
    reg = pd.gateway.registry
    labels = {"cluster": "default", "model": "tiny-llama", "tenant": "acme"}
    assert reg.get_sample_value("slaplane_request_tpot_seconds_count", labels) == 1
    tpot = reg.get_sample_value("slaplane_request_tpot_seconds_sum", labels)
    e2e = reg.get_sample_value("slaplane_request_e2e_seconds_sum", labels)
    assert tpot is not None and e2e is not None
    assert 0.0 < tpot * 8 <= e2e  # the generation is part of the request's time


class _TenantStoreDown(MemoryStore):
    """Tenant and key reads fail, like Redis restarting (nothing cached yet)."""

    async def tenant_for_key(self, key_sha256: str) -> str | None:
        raise StoreUnavailable("down")

    async def get_tenant(self, tenant: str) -> TenantSLA | None:
        raise StoreUnavailable("down")


@pytest.mark.parametrize("headers", [AUTH, {"X-Tenant-ID": "acme"}], ids=["key", "header"])
async def test_store_down_503_counts_as_an_sla_miss(headers: dict[str, str]) -> None:
    """A 503 store_unavailable comes before the tenant's SLA is known; it is still a
    refusal, so it counts in sla_requests_total (missed on every SLO) like the others."""
    store = _TenantStoreDown()
    async with running_gateway(store, worker_url=["http://127.0.0.1:9"], model="m",
                               trust_tenant_header=True) as gw:  # fmt: skip
        status, raw, _ = await _post(gw, {"model": "m", "prompt": "x"}, headers)
        assert status == 503 and json.loads(raw)["error"]["code"] == "store_unavailable"
        reg = gw.gateway.registry
        # refused before the body is read (authentication first): no model label yet
        labels = {"cluster": "default", "model": "", "tenant": "default"}
        assert reg.get_sample_value("slaplane_requests_total", {**labels, "outcome": "error"}) == 1
        for slo in ("ttft", "itl", "all"):
            got = reg.get_sample_value(
                "slaplane_sla_requests_total", {**labels, "slo": slo, "result": "missed"}
            )
            assert got == 1, slo
            met = {**labels, "slo": slo, "result": "met"}
            assert reg.get_sample_value("slaplane_sla_requests_total", met) is None
    await store.close()


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ({"model": "tiny-llama", "prompt": "x"}, {}, 401, "missing_api_key"),
        ({"model": "tiny-llama", "prompt": "x"}, {"Authorization": "Bearer nope"}, 401,
         "invalid_api_key"),
        ("{not json", AUTH, 400, "invalid_json"),
        ({"prompt": "x"}, AUTH, 422, "invalid_value"),
        ({"model": "tiny-llama", "prompt": 5}, AUTH, 422, "invalid_value"),
        ({"model": "tiny-llama", "prompt": "x", "max_tokens": "3"}, AUTH, 422, "invalid_type"),
        ({"model": "tiny-llama", "prompt": "x", "stream": "yes"}, AUTH, 422, "invalid_type"),
        ({"model": "nope", "prompt": "x"}, AUTH, 404, "model_not_found"),
    ],
)  # fmt: skip
async def test_bad_requests_get_openai_errors(
    pd: GatewayHandle, body: object, headers: dict[str, str], status: int, code: str
) -> None:
    raw_body = body if isinstance(body, str) else json.dumps(body)
    async with (
        aiohttp.ClientSession() as s,
        s.post(pd.url + "/v1/completions", data=raw_body, headers=headers) as r,
    ):
        assert r.status == status
        err = (await r.json())["error"]
        assert err["code"] == code and err["message"]


async def test_oversized_body_413_and_unknown_path_404(mem: Store) -> None:
    async with running_gateway(mem, worker_url=["http://127.0.0.1:9"], model="m",
                               max_body_bytes=2048) as gw:  # fmt: skip
        status, raw, _ = await _post(gw, {"model": "m", "prompt": "x" * 5000})
        assert status == 413 and json.loads(raw)["error"]["code"] == "payload_too_large"
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/v2/nothing") as r:
            assert r.status == 404 and (await r.json())["error"]["type"]


async def test_models_health_ready_metrics(pd: GatewayHandle) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(pd.url + "/v1/models", headers=AUTH) as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["tiny-llama"]
        async with s.get(pd.url + "/health") as r:
            assert r.status == 200
        async with s.get(pd.url + "/ready") as r:
            assert r.status == 200 and (await r.json())["workers"] == 2
        async with s.get(pd.url + "/metrics") as r:
            text = await r.text()
            assert "slaplane_tenant_sla_target_seconds" in text


async def test_rate_limit_429_with_retry_after(mem: Store) -> None:
    await mem.put_tenant(TenantSLA(tenant="acme", rate_limit=RateLimit(rpm=2)))
    async with (
        running_sim(role="both", time_scale=50) as w,
        running_gateway(mem, worker_url=[w.url]) as gw,
    ):
        body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2}
        assert (await _post(gw, body))[0] == 200
        assert (await _post(gw, body))[0] == 200
        status, raw, headers = await _post(gw, body)
        assert status == 429 and json.loads(raw)["error"]["code"] == "rate_limit_rpm"
        assert int(headers["Retry-After"]) >= 1
        reg = gw.gateway.registry
        assert reg.get_sample_value(
            "slaplane_admission_rejections_total",
            {"cluster": "default", "model": "tiny-llama", "tenant": "acme",
             "reason": "rate_limit_rpm"},
        ) == 1  # fmt: skip


async def test_trusted_tenant_header_and_default_sla(mem: Store) -> None:
    async with (
        running_sim(role="both", time_scale=50) as w,
        running_gateway(mem, worker_url=[w.url], trust_tenant_header=True) as gw,
    ):
        body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2}
        status, _, _ = await _post(gw, body, {"X-Tenant-ID": "newcomer"})
        assert status == 200
        reg = gw.gateway.registry
        assert reg.get_sample_value(
            "slaplane_requests_total",
            {"cluster": "default", "model": "tiny-llama", "tenant": "default", "outcome": "ok"},
        ) == 1  # fmt: skip


async def test_retry_on_failing_worker(mem: Store) -> None:
    async with (
        running_sim(role="both", time_scale=50, error_rate=1.0, worker_id="bad") as bad,
        running_sim(role="both", time_scale=50, worker_id="good") as good,
        running_gateway(mem, worker_url=[bad.url, good.url], policy="round_robin") as gw,
    ):
        body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2, "stream": True}
        for _ in range(4):
            status, raw, _ = await _post(gw, body)
            assert status == 200 and raw.endswith(b"data: [DONE]\n\n")
        bad_id = bad.url.split("//")[1]
        assert bad_id in gw.gateway.breakers.open


async def test_mid_stream_death_ends_with_error_and_done(mem: Store) -> None:
    async with running_sim(role="both", time_scale=50) as w:
        async with aiohttp.ClientSession() as s:
            await s.post(w.url + "/sim/faults", json={"hang_rate": 1.0, "hang_mode": "mid",
                                                      "hang_after_tokens": 2})  # fmt: skip
        async with running_gateway(mem, worker_url=[w.url], first_byte_timeout_s=0.5) as gw:
            body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 8, "stream": True}
            status, raw, _ = await _post(gw, body)
            assert status == 200
            assert b'"error"' in raw and raw.endswith(b"data: [DONE]\n\n")


async def test_queue_releases_on_capacity_premium_first() -> None:
    """Held while the pool is saturated; fresh telemetry showing room wakes the queue,
    and the premium request (queued second) is released before the batch one."""
    import asyncio
    import time

    from controlplane.policy.types import ClusterView, RouteDecision, RouteRequest
    from controlplane.schemas import Priority, WorkerSnapshot

    store = open_store("memory://")
    for t, prio in (("gold", Priority.PREMIUM), ("bulk", Priority.BATCH)):
        await store.put_tenant(TenantSLA(tenant=t, priority=prio, ttft_ms=60_000, itl_ms=5_000))
    adm = {"queue": {"max_size": 8, "max_wait_s": 5.0}}
    async with (
        running_sim(role="both", time_scale=20) as w,
        running_gateway(
            store, worker_url=[w.url], trust_tenant_header=True, admission_params=adm
        ) as gw,
    ):
        g = gw.gateway

        def telemetry(waiting: int) -> None:
            now_ms = int(time.time() * 1000)
            snap = WorkerSnapshot(
                "default", "agent-w", "both", "tiny-llama", url=w.url, waiting=waiting, ts_ms=now_ms
            )
            g.state.apply(snap)

        telemetry(100)  # saturated: waiting far above the detector's queue limit
        order: list[str] = []
        observe = g.router.observe

        def recording(
            req: RouteRequest, decision: RouteDecision, view: ClusterView, now_s: float
        ) -> None:
            order.append(req.tenant)  # routed = released from the queue
            observe(req, decision, view, now_s)

        g.router.observe = recording  # type: ignore[method-assign]
        body = {"model": "tiny-llama", "prompt": "hi " * 20, "max_tokens": 2}

        async def call(tenant: str) -> int:
            async with (
                aiohttp.ClientSession() as s,
                s.post(gw.url + "/v1/completions", json=body, headers={"X-Tenant-ID": tenant}) as r,
            ):
                await r.read()
                return r.status

        bulk = asyncio.create_task(call("bulk"))
        await until(lambda: g.gate.queued == 1, what="bulk held")
        gold = asyncio.create_task(call("gold"))
        await until(lambda: g.gate.queued == 2, what="gold held")
        assert not order
        telemetry(0)  # room again: the listener wakes the best-ranked held request
        assert list(await asyncio.wait_for(asyncio.gather(gold, bulk), 5.0)) == [200, 200]
        assert order == ["gold", "bulk"]
        assert g.gate.queued == 0
    await store.close()


async def _protect_setup() -> Store:
    from controlplane.schemas import Priority

    store = open_store("memory://")
    await store.put_tenant(
        TenantSLA(tenant="gold", priority=Priority.PREMIUM, ttft_ms=60_000, itl_ms=5_000)
    )
    await store.put_tenant(
        TenantSLA(tenant="bulk", priority=Priority.BATCH, ttft_ms=600_000, itl_ms=5_000)
    )
    return store


def _queue_snapshot(url: str, tokens: int) -> WorkerSnapshot:
    """Telemetry of the one worker with ``tokens`` prompt tokens waiting (fresh now)."""
    import time

    return WorkerSnapshot(
        "default", "agent-w", "both", "tiny-llama", url=url, waiting=tokens // 5000,
        waiting_tokens=tokens, ts_ms=int(time.time() * 1000),
    )  # fmt: skip


async def test_batch_rejected_to_protect_active_premium_with_retry_after() -> None:
    """The gateway tells admission which higher-priority targets are active: after a
    premium request, a batch request that would leave a queue premium cannot meet is
    refused (holding off: 429, Retry-After from the predicted drain), while premium is
    still served."""
    from controlplane.policy.request.admission import AdmissionContext
    from controlplane.policy.types import Verdict

    store = await _protect_setup()
    adm = {"protect": {"hold": False}}
    async with (
        running_sim(role="both", time_scale=50) as w,
        running_gateway(
            store, worker_url=[w.url], trust_tenant_header=True, admission_params=adm
        ) as gw,
    ):
        g = gw.gateway
        seen: list[dict[int, float]] = []
        decide = g.admission.decide

        def spy(ctx: AdmissionContext, now_s: float) -> Verdict:
            seen.append(dict(ctx.active_ttft_targets_ms_by_rank))
            return decide(ctx, now_s)

        g.admission.decide = spy  # type: ignore[method-assign]
        body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2}
        assert (await _post(gw, body, {"X-Tenant-ID": "bulk"}))[0] == 200  # nobody above
        assert (await _post(gw, body, {"X-Tenant-ID": "gold"}))[0] == 200
        assert seen == [{0: 600_000.0}, {0: 600_000.0, 2: 60_000.0}]
        # ~10 minutes of prompt tokens queued: fine for bulk's own 600 s target, not for gold
        g.state.apply(_queue_snapshot(w.url, 2_000_000))
        status, raw, headers = await _post(gw, body, {"X-Tenant-ID": "bulk"})
        assert status == 429 and json.loads(raw)["error"]["code"] == "protect_higher_priority"
        assert int(headers["Retry-After"]) >= 30
        assert (await _post(gw, body, {"X-Tenant-ID": "gold"}))[0] == 200  # never shed
    await store.close()


async def test_hopeless_request_is_shed_with_retry_after_and_served_once_drained() -> None:
    """Alone at its priority, a standard request that the queue ahead would make late
    gets a 429 ``hopeless`` with Retry-After from the drain (served late it would only
    delay the rest); premium behind the same queue is served; with the queue gone the
    standard request is served again."""
    from controlplane.schemas import Priority

    store = await _protect_setup()
    await store.put_tenant(
        TenantSLA(tenant="std", priority=Priority.STANDARD, ttft_ms=10_000, itl_ms=5_000)
    )
    async with (
        running_sim(role="both", time_scale=50) as w,
        running_gateway(store, worker_url=[w.url], trust_tenant_header=True) as gw,
    ):
        g = gw.gateway
        body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2}
        g.state.apply(_queue_snapshot(w.url, 2_000_000))  # ~2 minutes of prefill ahead
        status, raw, headers = await _post(gw, body, {"X-Tenant-ID": "std"})
        assert status == 429 and json.loads(raw)["error"]["code"] == "hopeless"
        assert int(headers["Retry-After"]) >= 30
        assert (await _post(gw, body, {"X-Tenant-ID": "gold"}))[0] == 200  # never shed
        g.state.apply(_queue_snapshot(w.url, 0))
        assert (await _post(gw, body, {"X-Tenant-ID": "std"}))[0] == 200
    await store.close()


async def test_protected_batch_is_held_until_the_queue_drains() -> None:
    """Holding on (default): the batch request waits in the gateway's queue instead of a
    429, and goes as soon as telemetry shows the queue ahead has drained."""
    import asyncio

    store = await _protect_setup()
    async with (
        running_sim(role="both", time_scale=50) as w,
        running_gateway(store, worker_url=[w.url], trust_tenant_header=True) as gw,
    ):
        g = gw.gateway
        body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2}
        assert (await _post(gw, body, {"X-Tenant-ID": "gold"}))[0] == 200
        g.state.apply(_queue_snapshot(w.url, 2_000_000))
        bulk = asyncio.create_task(_post(gw, body, {"X-Tenant-ID": "bulk"}))
        await until(lambda: g.gate.queued == 1, what="bulk held")
        assert not bulk.done()
        g.state.apply(_queue_snapshot(w.url, 0))  # drained: the listener wakes the queue
        status, _, _ = await asyncio.wait_for(bulk, 5.0)
        assert status == 200 and g.gate.queued == 0
    await store.close()


async def test_late_newcomer_displaces_a_larger_unstarted_request() -> None:
    """A big request of a loose-target tenant waits in a long queue (not started); a
    small request of a tight-target tenant of the same priority would miss behind it.
    Admission gives the small one its place: the big one's upstream call is cancelled
    and its client gets 429 ``displaced`` with Retry-After; the small one is served."""
    import asyncio
    import time

    from controlplane.policy.types import RouteRequest
    from controlplane.schemas import Priority

    store = open_store("memory://")
    await store.put_tenant(
        TenantSLA(tenant="loose", priority=Priority.STANDARD, ttft_ms=3_600_000, itl_ms=5_000)
    )
    async with (
        running_sim(role="both", time_scale=50) as w,
        running_gateway(store, worker_url=[w.url], trust_tenant_header=True) as gw,
    ):
        g = gw.gateway
        async with aiohttp.ClientSession() as s:  # every request sits 1.5 s in the worker
            await s.post(w.url + "/sim/faults", json={"added_latency_ms": 1500})
        g.state.apply(_queue_snapshot(w.url, 2_000_000))  # minutes of prefill ahead
        small = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2}
        probe = RouteRequest("probe", "tight", "tiny-llama", 2, 2, Priority.STANDARD, 1.0, 1.0)
        d = g.router.route(probe, g.state.view(), time.time())
        assert d is not None and d.predicted_ttft_ms is not None
        # late by 5 ms: removing the big request's ~1,000 tokens saves far more
        await store.put_tenant(
            TenantSLA(
                tenant="tight",
                priority=Priority.STANDARD,
                ttft_ms=d.predicted_ttft_ms - 5.0,
                itl_ms=5_000,
            )
        )
        big = {"model": "tiny-llama", "prompt": "hello " * 1000, "max_tokens": 2}
        victim = asyncio.create_task(_post(gw, big, {"X-Tenant-ID": "loose"}))
        await until(lambda: g.ledger.unstarted_count() == 1 or victim.done(), what="dispatch")
        assert not victim.done(), victim.result()
        assert not victim.done()
        status, raw, _ = await _post(gw, small, {"X-Tenant-ID": "tight"})
        assert status == 200, raw
        vstatus, vraw, vheaders = await asyncio.wait_for(victim, 5.0)
        assert vstatus == 429 and json.loads(vraw)["error"]["code"] == "displaced"
        assert int(vheaders["Retry-After"]) >= 1
        assert g.ledger.unstarted_count() == 0 and len(g.ledger) == 0
        assert g.state.pending_prefill_tokens.get("agent-w", 0) == 0
        labels = {"cluster": "default", "model": "tiny-llama", "tenant": "loose",
                  "reason": "displaced"}  # fmt: skip
        assert g.registry.get_sample_value("slaplane_admission_rejections_total", labels) == 1
        # without a victim the same small request is refused, as before displacement
        status, raw, _ = await _post(gw, small, {"X-Tenant-ID": "tight"})
        assert status == 429 and json.loads(raw)["error"]["code"] == "hopeless"
    await store.close()
