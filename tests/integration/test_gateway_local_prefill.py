"""Conditional disaggregation end to end: gateway (sla policy) + sim prefill/decode
workers + real Redis. The prefill worker is saturated (fault-injected latency holds
every prompt sent to it), so once the prompts queued there put P/D's predicted TTFT
at risk, the gateway sends the next request to the decode worker alone, which
prefills it itself: same output as a unified worker, the route metric says role
``both`` on the decode worker and the request record has no prefill worker."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
import pytest

from controlplane.gateway.testing import running_gateway
from controlplane.schemas import Priority, TenantSLA
from controlplane.state import open_store
from controlplane.state.store import Store
from workers.sim.testing import running_sim

pytestmark = pytest.mark.timeout(120)
KEY = "sk-integration-local-prefill"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "tiny-llama"
PROMPT_TOKENS = 1000  # ~90 ms of cpu-tiny prefill each in the gateway's predictor


@pytest.fixture
async def rstore(redis_url: str) -> AsyncIterator[Store]:
    s = open_store(redis_url)
    await s.put_tenant(TenantSLA(tenant="fast", priority=Priority.STANDARD, ttft_ms=600,
                                 itl_ms=500))  # fmt: skip
    await s.put_api_key(hashlib.sha256(KEY.encode()).hexdigest(), "fast")
    yield s
    await s.close()


def _prompt(i: int) -> list[int]:
    """Token ids, distinct per request (no shared prefix to muddle the predictions)."""
    return [(i * 131 + k * 7) % 1000 + 1 for k in range(PROMPT_TOKENS)]


async def _post(url: str, body: dict[str, object], headers: dict[str, str]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/v1/completions", json=body, headers=headers) as r,
    ):
        return r.status, await r.read()


def _text(raw: bytes) -> str:
    out = []
    for ev in raw.split(b"\n\n"):
        if ev.startswith(b"data: {"):
            for c in json.loads(ev[6:]).get("choices", []):
                out.append(c.get("text") or "")
    return "".join(out)


async def test_saturated_prefill_worker_makes_decode_prefill_locally(rstore: Store) -> None:
    async with AsyncExitStack() as st:
        direct = await st.enter_async_context(running_sim(role="both", time_scale=20))
        p = await st.enter_async_context(
            running_sim(role="prefill", time_scale=20, added_latency_ms=2500)
        )
        d = await st.enter_async_context(running_sim(role="decode", time_scale=20))
        gw = await st.enter_async_context(running_gateway(
            rstore, policy="sla", redis_url="", prefill_url=[p.url], decode_url=[d.url],
            record_flush_s=0.05,
        ))  # fmt: skip
        sample = gw.gateway.registry.get_sample_value
        pid, did = p.url.split("//")[1], d.url.split("//")[1]
        labels = {"cluster": "default", "model": MODEL, "policy": "sla"}

        def routes(role: str, worker: str) -> float:
            v = sample("slaplane_route_decisions_total", {**labels, "role": role, "worker": worker})
            return v or 0.0

        tasks: list[asyncio.Task[tuple[int, bytes]]] = []
        local_at = -1
        for i in range(8):
            body = {"model": MODEL, "prompt": _prompt(i), "max_tokens": 8, "stream": True}
            tasks.append(asyncio.create_task(_post(gw.url, body, AUTH)))
            deadline = time.monotonic() + 5
            while routes("prefill", pid) + routes("both", did) < i + 1:
                assert time.monotonic() < deadline, "request never routed"
                await asyncio.sleep(0.01)
            if routes("both", did):
                local_at = i
                break
        # the first requests went P/D and sit in the held prefill worker; a later one,
        # with P/D's predicted TTFT past half the 600 ms target, was served locally
        assert local_at >= 1, "no request was prefilled on the decode worker"
        assert routes("prefill", pid) == local_at and routes("both", did) == 1
        assert gw.gateway.state.pending_prefill_tokens.get(pid, 0) == local_at * PROMPT_TOKENS

        results = await asyncio.gather(*tasks)
        assert all(r[0] == 200 and r[1].endswith(b"data: [DONE]\n\n") for r in results)
        body = {"model": MODEL, "prompt": _prompt(local_at), "max_tokens": 8, "stream": True}
        want = _text((await _post(direct.url, body, {}))[1])
        assert want and _text(results[local_at][1]) == want
        # every counter the gateway keeps for the local prefill is back to zero
        assert gw.gateway.state.pending_prefill_tokens.get(did, 0) == 0
        assert gw.gateway.state.inflight.get(did, 0) == 0

        deadline = time.monotonic() + 30.0  # records are flushed in batches: wait for them
        while len(await rstore.read_requests("default")) < local_at + 1:
            assert time.monotonic() < deadline, "request records not flushed"
            await asyncio.sleep(0.05)
        recs = [r for _, r in await rstore.read_requests("default")]
        assert len(recs) == local_at + 1 and all(r.outcome == "ok" for r in recs)
        local = [r for r in recs if not r.prefill_worker]
        assert len(local) == 1 and local[0].decode_worker == did
        assert local[0].output_tokens == 8 and local[0].ttft_ms is not None
