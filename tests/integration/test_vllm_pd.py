"""Real vLLM P/D pair: a request with real KV transfer, and the telemetry of both
workers (agent- and plugin-published) in Redis."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest
import redis

from controlplane.schemas import WorkerSnapshot
from controlplane.state import keys
from tests.integration.conftest_vllm import (
    VllmPair,
    metric_value,
    pd_completion,
    scrape,
    settled,
)

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

PROMPT_TOKENS = 300  # > 128: ExampleConnector only transfers whole 128-token blocks
OUT_TOKENS = 32  # several output batches, so vLLM records inter-token samples


def _snapshot(r: redis.Redis, cluster: str, worker: str) -> WorkerSnapshot | None:
    raw = r.hgetall(keys.worker_hash(cluster, worker))
    return WorkerSnapshot.from_redis(raw) if raw else None  # type: ignore[arg-type]


def _wait_for(
    r: redis.Redis, cluster: str, worker: str, ok: Callable[[WorkerSnapshot], bool]
) -> WorkerSnapshot:
    deadline = time.monotonic() + 15.0
    snap = None
    while time.monotonic() < deadline:
        snap = _snapshot(r, cluster, worker)
        if snap is not None and ok(snap):
            return snap
        time.sleep(0.1)
    raise AssertionError(f"{worker}: no matching snapshot in 15 s; last {snap}")


def test_pd_request_transfers_kv_and_both_workers_publish(vllm_pd_pair: VllmPair) -> None:
    pair = vllm_pd_pair
    rng = random.Random(7)
    prompt = [rng.randrange(10, 4000) for _ in range(PROMPT_TOKENS)]
    page = scrape(pair.decode)
    before = metric_value(page, "vllm:prompt_tokens_by_source_total", source="external_kv_transfer")
    itl_before = metric_value(page, "vllm:inter_token_latency_seconds_count")

    out = pd_completion(pair, prompt, max_tokens=OUT_TOKENS)

    assert out["prefill"]["choices"][0]["finish_reason"] == "length"
    assert out["prefill"]["usage"]["prompt_tokens"] == PROMPT_TOKENS
    texts = [c for c in out["chunks"] if c.get("choices")]
    assert texts and out["ttft_s"] is not None, out["chunks"]  # streamed (chunks may merge)
    usage = out["chunks"][-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (PROMPT_TOKENS, OUT_TOKENS)
    # the decode server loaded the prompt's KV from the prefill server instead of computing it
    page = settled(
        lambda: scrape(pair.decode),
        lambda pg: metric_value(pg, "vllm:prompt_tokens_by_source_total",
                                source="external_kv_transfer") - before >= 256,
    )  # fmt: skip
    after = metric_value(page, "vllm:prompt_tokens_by_source_total", source="external_kv_transfer")
    assert after - before >= 256, (before, after)
    # vLLM records ITL per output batch; on a busy host tokens can arrive in one batch, so
    # the plugin owes an ITL only when vLLM itself recorded new inter-token samples
    vllm_saw_itl = metric_value(page, "vllm:inter_token_latency_seconds_count") > itl_before

    r = redis.Redis.from_url(pair.redis_url, decode_responses=True)
    try:
        # the plugin sees every TTFT/ITL sample; its 5 s window still holds this request's
        plug = _wait_for(
            r,
            pair.cluster,
            pair.decode.plugin_worker_id,
            lambda s: (
                s.requests_finished_total >= 1
                and s.ttft_p50_ms is not None
                and (s.itl_p50_ms is not None or not vllm_saw_itl)
            ),
        )
        assert plug.url == pair.decode.url
        assert plug.kv_capacity_tokens == 131072  # 1 GiB CPU KV cache, fixtures README
        assert plug.extra["prompt_tokens_external_total"] >= 256
        if vllm_saw_itl:
            assert plug.itl_p50_ms is not None and plug.itl_p50_ms > 0

        for w in pair.workers:
            for wid, source in ((w.plugin_worker_id, "plugin"), (w.worker_id, "agent")):
                snap = _wait_for(
                    r,
                    pair.cluster,
                    wid,
                    # up too: on a loaded host two 80 ms scrapes in a row can time out, and
                    # the agent then publishes the worker as down until it answers again
                    lambda s: s.up and s.requests_finished_total >= 1 and s.prompt_tokens_total > 0,
                )
                assert snap.source == source, snap
                assert snap.role == w.role
                assert snap.model == pair.model
                assert snap.prompt_tokens_total >= PROMPT_TOKENS
                assert snap.generation_tokens_total >= 1
                assert snap.ts_ms > 0
                assert r.zscore(keys.workers_zset(pair.cluster), wid) is not None
        assert r.xlen(keys.telemetry_stream(pair.cluster)) > 0
    finally:
        r.close()
