"""The gateway in front of the real vLLM P/D pair (ExampleConnector).

Workers are discovered from telemetry only (agent and plugin snapshots in Redis,
so the plugin shadows must not show up as extra workers), a tenant authenticates
with an API key from the store, and a streamed completion with a >128-token prompt
goes through the gateway's own prefill → decode handoff. KV really moved when the
decode server counts the prompt's tokens as ``external_kv_transfer``; the gateway's
/metrics then carries the tenant's TTFT histogram and SLA counters.
"""

from __future__ import annotations

import json
import random

import aiohttp
import pytest

from controlplane.gateway.testing import running_gateway
from controlplane.state import open_store
from tests.integration.conftest_vllm import (
    VllmPair,
    add_premium_key,
    metric_value,
    scrape,
    settled,
    wait_for_pair_pools,
)

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

PROMPT_TOKENS = 300  # > 128: ExampleConnector only transfers whole 128-token blocks


async def test_gateway_streams_pd_through_real_vllm(vllm_pd_pair: VllmPair) -> None:
    pair = vllm_pd_pair
    store = open_store(pair.redis_url)
    tenant, key = await add_premium_key(store, "vt")
    rng = random.Random(11)
    prompt = [rng.randrange(10, 4000) for _ in range(PROMPT_TOKENS)]
    ext = "vllm:prompt_tokens_by_source_total"
    before = metric_value(scrape(pair.decode), ext, source="external_kv_transfer")
    try:
        # generous staleness and connect limits: on a loaded CI host (NIXL's UCX threads
        # spin) telemetry and connects can lag by seconds, and the gateway would then
        # rightly fall back to serving on the prefill worker, which is not under test here
        async with running_gateway(
            store, cluster=pair.cluster, redis_url=pair.redis_url, stale_after_s=60.0,
            connect_timeout_s=30.0,
        ) as gw:  # fmt: skip
            await wait_for_pair_pools(gw.gateway.state, pair)
            body = {
                "model": pair.model, "prompt": prompt, "max_tokens": 8, "stream": True,
                "ignore_eos": True, "temperature": 0.0,
                "stream_options": {"include_usage": True},
            }  # fmt: skip
            chunks: list[dict[str, object]] = []
            headers = {"Authorization": f"Bearer {key}"}
            async with (
                aiohttp.ClientSession() as s,
                s.post(gw.url + "/v1/completions", json=body, headers=headers) as r,
            ):
                assert r.status == 200, await r.text()
                async for raw in r.content:
                    line = raw.decode().strip()
                    if line.startswith("data: {"):
                        chunks.append(json.loads(line.removeprefix("data: ")))
                async with s.get(gw.url + "/metrics") as m:
                    page = await m.text()
    finally:
        await store.close()

    text = "".join(
        str(c.get("text", ""))
        for ch in chunks
        for c in ch.get("choices", [])  # type: ignore[attr-defined]
    )
    assert text, chunks
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] == PROMPT_TOKENS and usage["completion_tokens"] == 8  # type: ignore[index]
    after = settled(lambda: metric_value(scrape(pair.decode), ext, source="external_kv_transfer"),
                    lambda a: a - before >= 256)  # fmt: skip
    assert after - before >= 256, (before, after)  # KV came from the prefill server
    labels = {"cluster": pair.cluster, "model": pair.model, "tenant": tenant}
    assert metric_value(page, "slaplane_request_ttft_seconds_count", **labels) == 1
    assert metric_value(page, "slaplane_sla_requests_total", slo="all", **labels) == 1
    routed = metric_value(page, "slaplane_route_decisions_total", role="prefill")
    assert routed == 1 and metric_value(page, "slaplane_route_decisions_total", role="decode") == 1
