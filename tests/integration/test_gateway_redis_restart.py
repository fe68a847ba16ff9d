"""Redis restart under load: the gateway fails open and loses no admitted request."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp
import pytest

from controlplane.gateway.testing import running_gateway
from controlplane.schemas import RateLimit, TenantSLA
from controlplane.state import open_store
from tests.conftest import RedisServer
from workers.sim.testing import running_sim

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]
KEY = "sk-restart"


async def _seed(url: str) -> None:
    s = open_store(url)
    await s.put_tenant(TenantSLA(tenant="acme", ttft_ms=10_000, itl_ms=1000,
                                 rate_limit=RateLimit(rpm=100_000, tpm=10_000_000),
                                 max_concurrency=1000))  # fmt: skip
    await s.put_api_key(hashlib.sha256(KEY.encode()).hexdigest(), "acme")
    await s.close()


async def test_redis_restart_under_load_loses_no_admitted_request(
    redis_server: RedisServer,
) -> None:
    if os.environ.get("SLAPLANE_REDIS_URL"):
        pytest.skip("needs the private redis-server this test can restart")
    url = redis_server.url + "/9"
    await _seed(url)
    store = open_store(url)
    statuses: list[int] = []
    complete: list[bool] = []
    stop = asyncio.Event()

    async def client(gw_url: str) -> None:
        body = {"model": "tiny-llama", "prompt": "load " * 40, "max_tokens": 16, "stream": True}
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
            while not stop.is_set():
                async with s.post(gw_url + "/v1/completions", json=body) as r:
                    raw = await r.read()
                    statuses.append(r.status)
                    if r.status == 200:
                        complete.append(raw.endswith(b"data: [DONE]\n\n") and b'"error"' not in raw)

    try:
        async with (
            running_sim(role="both", time_scale=20) as w1,
            running_sim(role="both", time_scale=20) as w2,
            running_gateway(
                store, worker_url=[w1.url, w2.url], store_timeout_s=0.1, store_backoff_max_s=0.5
            ) as gw,
        ):
            tasks = [asyncio.create_task(client(gw.url)) for _ in range(16)]
            await asyncio.sleep(1.0)
            before = len(statuses)
            await asyncio.to_thread(redis_server.stop)
            await asyncio.sleep(1.5)
            during = len(statuses) - before
            await asyncio.to_thread(redis_server.start)
            await _seed(url)  # a fresh (non-persistent) Redis: the operator re-seeds
            await asyncio.sleep(2.5)
            stop.set()
            await asyncio.gather(*tasks)
            reg = gw.gateway.registry
            failures = sum(
                reg.get_sample_value(
                    "slaplane_gateway_store_failures_total", {"cluster": "default", "op": op}
                ) or 0
                for op in ("take_tokens", "acquire_slot", "release_slot", "resync", "telemetry")
            )  # fmt: skip
            assert gw.gateway.limits._store_usable()  # shared limiting is back
            assert gw.gateway.follower.store_ok
    finally:
        await store.close()
    assert during > 10, "gateway stopped serving while Redis was down"
    assert failures > 0, "the outage was not counted"
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
    assert len(complete) == len(statuses) and all(complete)
