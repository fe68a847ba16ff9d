"""Gateway with real Redis and several sim workers: policies, P/D, byte-exact relay,
the openai SDK, tenants' 401/429, a killed worker, telemetry-driven discovery."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controlplane.gateway.testing import running_gateway, until
from controlplane.schemas import Priority, TenantSLA, WorkerSnapshot
from controlplane.state import open_store
from controlplane.state.store import Store
from tests.conftest import free_port
from workers.sim.testing import SimHandle, running_sim

pytestmark = pytest.mark.timeout(120)
KEY = "sk-integration-acme"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "tiny-llama"


@pytest.fixture
async def rstore(redis_url: str) -> AsyncIterator[Store]:
    s = open_store(redis_url)
    await s.put_tenant(TenantSLA(tenant="acme", priority=Priority.PREMIUM, ttft_ms=5000,
                                 itl_ms=500))  # fmt: skip
    await s.put_api_key(hashlib.sha256(KEY.encode()).hexdigest(), "acme")
    yield s
    await s.close()


async def _stream(url: str, body: dict[str, object], headers: dict[str, str] | None = None,
                  path: str = "/v1/completions") -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + path, json=body, headers=headers if headers is not None else AUTH) as r,
    ):
        return r.status, await r.read(), dict(r.headers)


def _text(raw: bytes) -> str:
    out = []
    for ev in raw.split(b"\n\n"):
        if ev.startswith(b"data: {"):
            for c in json.loads(ev[6:]).get("choices", []):
                out.append(c.get("text") or (c.get("delta") or {}).get("content") or "")
    return "".join(out)


@pytest.mark.parametrize("policy", ["round_robin", "least_loaded", "kv_aware", "sla"])
async def test_every_policy_serves_pd_and_records(rstore: Store, policy: str) -> None:
    async with AsyncExitStack() as st:
        sims: list[SimHandle] = []
        for role in ("prefill", "prefill", "decode", "decode"):
            sims.append(await st.enter_async_context(running_sim(role=role, time_scale=20)))
        gw = await st.enter_async_context(running_gateway(
            rstore, policy=policy, redis_url="", prefill_url=[s.url for s in sims[:2]],
            decode_url=[s.url for s in sims[2:]], record_flush_s=0.05,
        ))  # fmt: skip
        body = {"model": MODEL, "prompt": "shared system prompt " * 20, "max_tokens": 6,
                "stream": True}  # fmt: skip
        results = await asyncio.gather(*(_stream(gw.url, body) for _ in range(8)))
        assert all(r[0] == 200 and r[1].endswith(b"data: [DONE]\n\n") for r in results)
        recs = await _records(rstore, 8)
        for _, rec in recs:
            assert rec.outcome == "ok" and rec.prefill_worker and rec.decode_worker
            assert rec.predicted_ttft_ms is not None and rec.ttft_ms is not None
            assert rec.output_tokens == 6 and rec.sla_met is True


async def test_stream_byte_for_byte_equal_to_direct(rstore: Store) -> None:
    body = {"model": MODEL, "prompt": "The quick brown fox " * 8, "max_tokens": 12,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    async with (
        running_sim(role="both", time_scale=20, fixed_created=7, seed=3) as direct,
        running_sim(role="both", time_scale=20, fixed_created=7, seed=3) as behind,
        running_gateway(rstore, worker_url=[behind.url]) as gw,
    ):
        d = await _stream(direct.url, body, {})
        g = await _stream(gw.url, body)
        assert g[0] == d[0] == 200
        assert g[1] == d[1]  # same bytes, usage chunk and [DONE] included
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 5, "stream": True}  # fmt: skip
        d = await _stream(direct.url, chat, {}, "/v1/chat/completions")
        g = await _stream(gw.url, chat, None, "/v1/chat/completions")
        assert g[1] == d[1]


async def test_pd_text_equals_direct_unified(rstore: Store) -> None:
    body = {"model": MODEL, "prompt": "abc " * 60, "max_tokens": 10, "stream": True}
    async with (
        running_sim(role="both", time_scale=20) as direct,
        running_sim(role="prefill", time_scale=20) as p,
        running_sim(role="decode", time_scale=20) as d,
        running_gateway(rstore, prefill_url=[p.url], decode_url=[d.url]) as gw,
    ):
        want = _text((await _stream(direct.url, body, {}))[1])
        got = await _stream(gw.url, body)
        assert got[0] == 200 and _text(got[1]) == want and len(want) > 0


async def test_openai_sdk_through_pd_pool(rstore: Store) -> None:
    """The issue's 'done when': the SDK streams via 1P+1D and /metrics shows the tenant."""
    openai = pytest.importorskip("openai")
    async with (
        running_sim(role="prefill", time_scale=20) as p,
        running_sim(role="decode", time_scale=20) as d,
        running_gateway(rstore, prefill_url=[p.url], decode_url=[d.url]) as gw,
    ):
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        stream = await client.completions.create(
            model=MODEL, prompt="hello world " * 30, max_tokens=8, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].text
            if chunk.usage:
                usage = chunk.usage
        assert text and usage is not None and usage.completion_tokens == 8
        chat = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert chat.choices[0].message.content
        models = await client.models.list()
        assert [m.id for m in models.data] == [MODEL]
        with pytest.raises(openai.AuthenticationError):
            bad = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="wrong", max_retries=0)
            await bad.completions.create(model=MODEL, prompt="x", max_tokens=1)
        await client.close()
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/metrics") as r:
            metrics = await r.text()
        for line in (
            'slaplane_request_ttft_seconds_count{cluster="default",model="tiny-llama",tenant="acme"}',
            'slaplane_request_itl_seconds_count{cluster="default",model="tiny-llama",tenant="acme"}',
            'slaplane_sla_requests_total{cluster="default",model="tiny-llama",result="met",slo="all",tenant="acme"}',
        ):  # fmt: skip
            assert line in metrics, line


async def test_concurrency_limit_across_replicas_429(rstore: Store) -> None:
    await rstore.put_tenant(TenantSLA(tenant="acme", max_concurrency=1))
    async with (
        running_sim(role="both", time_scale=1) as w,
        running_gateway(rstore, worker_url=[w.url]) as g1,
        running_gateway(rstore, worker_url=[w.url]) as g2,
    ):
        slow = {"model": MODEL, "prompt": "x", "max_tokens": 200, "stream": True}
        task = asyncio.create_task(_stream(g1.url, slow))
        await until(lambda: len(g1.gateway.ledger) == 1, what="the slow stream admitted")
        status, raw, headers = await _stream(g2.url, {"model": MODEL, "prompt": "y",
                                                      "max_tokens": 1})  # fmt: skip
        assert status == 429 and json.loads(raw)["error"]["code"] == "concurrency_limit"
        assert int(headers["Retry-After"]) >= 1
        assert (await task)[0] == 200
        assert (await _stream(g2.url, {"model": MODEL, "prompt": "y", "max_tokens": 1}))[0] == 200


def _spawn_sim(port: int, worker_id: str) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("slaplane")
    return subprocess.Popen(
        [str(exe), "sim-worker", "--port", str(port), "--role", "both", "--time-scale", "20",
         "--worker-id", worker_id, "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )  # fmt: skip


async def _wait_health(url: str) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never healthy")


async def test_retry_on_killed_worker(rstore: Store) -> None:
    ports = [free_port(), free_port()]
    procs = [_spawn_sim(p, f"k{i}") for i, p in enumerate(ports)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for u in urls:
            await _wait_health(u)
        async with running_gateway(rstore, worker_url=urls, policy="round_robin") as gw:
            body = {"model": MODEL, "prompt": "hi", "max_tokens": 4, "stream": True}
            assert all(r[0] == 200 for r in [await _stream(gw.url, body) for _ in range(2)])
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
            results = [await _stream(gw.url, body) for _ in range(6)]
            assert all(r[0] == 200 and r[1].endswith(b"data: [DONE]\n\n") for r in results)
            reg = gw.gateway.registry
            retried = reg.get_sample_value(
                "slaplane_gateway_upstream_retries_total",
                {"cluster": "default", "worker": f"127.0.0.1:{ports[0]}",
                 "reason": "upstream_error"},
            )  # fmt: skip
            assert retried is not None and retried >= 1
            assert f"127.0.0.1:{ports[0]}" in gw.gateway.breakers.open
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=10)


async def test_workers_from_telemetry_and_draining(rstore: Store) -> None:
    async with (
        running_sim(role="both", time_scale=20, worker_id="a") as a,
        running_sim(role="both", time_scale=20, worker_id="b") as b,
    ):
        for wid, url in (("a", a.url), ("b", b.url)):
            await rstore.publish_snapshot(WorkerSnapshot(
                "default", wid, "both", MODEL, url=url, ts_ms=int(time.time() * 1000) + 60_000
            ))  # fmt: skip
        await rstore.set_control("default", {"draining": "a"})
        async with running_gateway(rstore, policy="round_robin", resync_s=0.1) as gw:
            body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
            for _ in range(4):
                assert (await _stream(gw.url, body))[0] == 200
            routes = gw.gateway.registry.get_sample_value
            labels = {"cluster": "default", "model": MODEL, "policy": "round_robin",
                      "role": "both"}  # fmt: skip
            assert routes("slaplane_route_decisions_total", {**labels, "worker": "b"}) == 4
            assert routes("slaplane_route_decisions_total", {**labels, "worker": "a"}) is None


async def _records(store: Store, n: int, timeout_s: float = 30.0) -> list[tuple[str, Any]]:
    """The cluster's request records once ``n`` have been flushed (batched, so they lag)."""
    deadline = time.monotonic() + timeout_s
    while True:
        recs = await store.read_requests("default")
        if len(recs) >= n or time.monotonic() > deadline:
            return list(recs)
        await asyncio.sleep(0.05)
