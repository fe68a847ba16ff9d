"""/metrics must look like vLLM 0.32.0's to any scraper (the agent, Prometheus, Grafana).

Compared: every ``vllm:*`` family (as parsed by prometheus_client), its type and its
label names (``le`` excluded), against the real captures. The ``python_*``,
``process_*`` and ``http_*`` families are deliberately not exposed by the sim.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from workers.sim.testing import running_sim


def families(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("vllm:"):
            continue
        labels = {k for s in fam.samples for k in s.labels if k not in ("le", "quantile")}
        out[fam.name] = (fam.type, frozenset(labels))
    return out


def values(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + "".join(
                f",{k}={v}"
                for k, v in sorted(s.labels.items())
                if k not in ("engine", "model_name")
            )
            out[key] = s.value
    return out


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        assert r.status == 200
        return await r.text()


@pytest.mark.parametrize(
    ("role", "fixture"),
    [
        ("both", "metrics-after.txt"),
        ("both", "metrics-idle.txt"),
        ("prefill", "metrics-prefill-after.txt"),
        ("decode", "metrics-decode-after.txt"),
    ],
)
async def test_vllm_families_match_real_vllm(shared_dir: Path, role: str, fixture: str) -> None:
    real = families((shared_dir / "fixtures/vllm-0.32.0" / fixture).read_text())
    async with running_sim(role=role, time_scale=50.0) as sim:
        ours = families(await scrape(sim.url))
    assert ours == real


async def test_metrics_reflect_engine_behaviour() -> None:
    async with running_sim(time_scale=20.0, max_num_seqs=2) as sim:
        loaded_page = None

        async def one(i: int) -> None:
            body = {"prompt": [i + 1] * 300, "max_tokens": 20, "stream": True}
            async with (
                aiohttp.ClientSession() as s,
                s.post(sim.url + "/v1/completions", json=body) as r,
            ):
                await r.read()

        tasks = [asyncio.create_task(one(i)) for i in range(5)]
        for _ in range(200):
            await asyncio.sleep(0.002)
            page = await scrape(sim.url)
            v = values(page)
            if v["vllm:num_requests_waiting"] > 0:
                loaded_page = v
                break
        await asyncio.gather(*tasks)
        v = values(await scrape(sim.url))
    assert loaded_page is not None
    assert loaded_page["vllm:num_requests_running"] == 2
    assert loaded_page["vllm:num_requests_waiting_by_reason,reason=capacity"] > 0
    assert loaded_page["vllm:kv_cache_usage_perc"] > 0
    assert v["vllm:prompt_tokens_total"] == 1500
    assert v["vllm:generation_tokens_total"] == 100
    assert v["vllm:request_success_total,finished_reason=length"] == 5
    assert v["vllm:time_to_first_token_seconds_count"] == 5
    assert v["vllm:inter_token_latency_seconds_count"] == 5 * 19
    assert v["vllm:request_queue_time_seconds_sum"] > 0  # max_num_seqs=2 made three wait
    assert v["vllm:request_prefill_kv_computed_tokens_sum"] == 1500
    assert v["vllm:num_requests_running"] == 0 and v["vllm:kv_cache_usage_perc"] == 0
    ttft = v["vllm:time_to_first_token_seconds_sum"] / 5
    assert 0.01 < ttft < 1.0  # profile seconds, not wall seconds


async def test_prefix_cache_counters() -> None:
    async with running_sim(time_scale=20.0) as sim:
        body = {"prompt": list(range(1, 301)), "max_tokens": 2}
        for _ in range(2):
            async with (
                aiohttp.ClientSession() as s,
                s.post(sim.url + "/v1/completions", json=body) as r,
            ):
                assert r.status == 200
        v = values(await scrape(sim.url))
    assert v["vllm:prefix_cache_queries_total"] == 600
    assert v["vllm:prefix_cache_hits_total"] == 256  # two full 128-token blocks
    assert v["vllm:prompt_tokens_cached_by_source_total,source=device"] == 256
