"""A real NixlConnector P/D pair on CPU: KV pulled over NIXL/UCX, with the gateway in front.

``slaplane worker --kv-connector nixl`` starts both vLLM servers (producer on core 0,
consumer on core 1, CPU KV buffers, one side channel each) from the ``nixl`` +
``nixl-cu12`` packages that ``make vllm-env`` installs. The pair lives for this module
only: each NIXL worker runs a UCX progress thread that spins on its core even when idle.

"KV really moved" is checked on the decode server's counters, which tell apart the three
ways a prompt token can get into its KV cache (``vllm:prompt_tokens_by_source_total``:
``local_compute``, ``local_cache_hit``, ``external_kv_transfer``) together with the
connector's own byte counter (``vllm:nixl_bytes_transferred_sum``). A control request
without ``kv_transfer_params`` shows the same counters do move to ``local_compute`` when
the decode server computes the prompt itself.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from controlplane.gateway.testing import running_gateway
from controlplane.state import open_store
from tests.integration.conftest_vllm import (
    VllmPair,
    VllmWorker,
    _http_json,
    add_premium_key,
    launch_vllm_pair,
    metric_value,
    pd_completion,
    scrape,
    settled,
    wait_for_pair_pools,
)

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

PROMPT_TOKENS = 600  # 5 KV blocks of 128, the last one partial
OUT_TOKENS = 8
BY_SOURCE = "vllm:prompt_tokens_by_source_total"
NIXL_BYTES = "vllm:nixl_bytes_transferred_sum"
NIXL_XFERS = "vllm:nixl_xfer_time_seconds_count"
NIXL_FAILED = "vllm:nixl_num_failed_transfers_total"


@pytest.fixture(scope="module")
def nixl_pair(vllm_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmPair]:
    tmp = tmp_path_factory.mktemp("vllm-nixl")
    with launch_vllm_pair(tmp, vllm_redis_url, connector="nixl", plugin=False) as pair:
        yield pair


def _kv_bytes_per_token() -> int:
    """K and V, every layer, every KV head, float32: what NIXL must move per token."""
    cfg = json.loads((Path(os.environ["SLAPLANE_TINY_MODEL"]) / "config.json").read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 4


def _counters(w: VllmWorker) -> dict[str, float]:
    page = scrape(w)
    out = {src: metric_value(page, BY_SOURCE, source=src) for src in ("local_compute",
           "local_cache_hit", "external_kv_transfer")}  # fmt: skip
    for name in (NIXL_BYTES, NIXL_XFERS, NIXL_FAILED):
        out[name] = metric_value(page, name)
    return out


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _settled_deltas(
    pair: VllmPair, d0: dict[str, float], p0: dict[str, float]
) -> tuple[dict[str, float], dict[str, float]]:
    """Decode and prefill deltas once the request's counters have landed (or 10 s)."""
    d = settled(
        lambda: _delta(_counters(pair.decode), d0),
        lambda d: d["external_kv_transfer"] >= PROMPT_TOKENS and d[NIXL_XFERS] >= 1,
    )
    p = settled(
        lambda: _delta(_counters(pair.prefill), p0),
        lambda p: p["local_compute"] >= PROMPT_TOKENS,
    )
    return d, p


def _prompt(seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, 4000) for _ in range(PROMPT_TOKENS)]


def _assert_pulled_over_nixl(d: dict[str, float], p: dict[str, float], logs: str) -> None:
    """Decode deltas ``d`` and prefill deltas ``p`` of one P/D request."""
    # every prompt token's KV came from the prefill server; none computed, none cached
    assert d["external_kv_transfer"] == PROMPT_TOKENS, (d, logs)
    assert d["local_compute"] == 0 and d["local_cache_hit"] == 0, (d, logs)
    # ... over NIXL: at least the KV of the whole prompt (whole blocks are sent)
    assert d[NIXL_XFERS] >= 1 and d[NIXL_FAILED] == 0, (d, logs)
    assert d[NIXL_BYTES] >= PROMPT_TOKENS * _kv_bytes_per_token(), (d, logs)
    # and the prefill server computed it
    assert p["local_compute"] == PROMPT_TOKENS, p


def test_nixl_pd_request_pulls_kv_from_prefill(nixl_pair: VllmPair) -> None:
    pair = nixl_pair
    d0, p0 = _counters(pair.decode), _counters(pair.prefill)

    out = pd_completion(pair, _prompt(1), max_tokens=OUT_TOKENS)

    ktp = out["prefill"]["kv_transfer_params"]
    assert ktp["do_remote_prefill"] is True and ktp["transfer_mode"] == "pull", ktp
    # the handle points at the prefill server's side channel (set by slaplane worker)
    assert (ktp["remote_host"], ktp["remote_port"]) == (
        "127.0.0.1",
        pair.prefill.nixl_side_channel_port,
    ), ktp
    assert ktp["remote_num_tokens"] == PROMPT_TOKENS and ktp["remote_block_ids"][0], ktp
    usage = out["chunks"][-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (PROMPT_TOKENS, OUT_TOKENS)
    assert out["ttft_s"] is not None
    d, p = _settled_deltas(pair, d0, p0)
    _assert_pulled_over_nixl(d, p, pair.decode.log_tail(20))

    # control: the same counters show a recomputed prompt when no KV handle is passed
    d1 = _counters(pair.decode)
    plain = _http_json(
        f"{pair.decode.url}/v1/completions",
        {"model": pair.model, "prompt": _prompt(2), "max_tokens": 1},
    )
    assert plain["usage"]["prompt_tokens"] == PROMPT_TOKENS
    d = settled(lambda: _delta(_counters(pair.decode), d1),
                lambda d: d["local_compute"] >= PROMPT_TOKENS)  # fmt: skip
    assert d["local_compute"] == PROMPT_TOKENS and d["external_kv_transfer"] == 0, d
    assert d[NIXL_BYTES] == 0, d


async def test_gateway_streams_pd_over_nixl(nixl_pair: VllmPair) -> None:
    pair = nixl_pair
    store = open_store(pair.redis_url)
    tenant, key = await add_premium_key(store, "vn")
    d0, p0 = _counters(pair.decode), _counters(pair.prefill)
    lines: list[str] = []
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
                "model": pair.model, "prompt": _prompt(3), "max_tokens": OUT_TOKENS,
                "stream": True, "ignore_eos": True, "temperature": 0.0,
                "stream_options": {"include_usage": True},
            }  # fmt: skip
            headers = {"Authorization": f"Bearer {key}"}
            async with (
                aiohttp.ClientSession() as s,
                s.post(gw.url + "/v1/completions", json=body, headers=headers) as r,
            ):
                assert r.status == 200, await r.text()
                assert r.headers["Content-Type"].startswith("text/event-stream")
                async for raw in r.content:
                    if line := raw.decode().strip():
                        lines.append(line)
                async with s.get(gw.url + "/metrics") as m:
                    page = await m.text()
    finally:
        await store.close()

    # a well-formed OpenAI completions stream: data lines, [DONE] last, one id, usage last
    assert lines and all(x.startswith("data: ") for x in lines), lines
    assert lines[-1] == "data: [DONE]" and lines.count("data: [DONE]") == 1, lines
    chunks = [json.loads(x.removeprefix("data: ")) for x in lines[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}, chunks
    assert len({c["id"] for c in chunks}) == 1, chunks
    texts = [c["choices"][0] for c in chunks if c["choices"]]
    assert texts and "".join(t["text"] for t in texts), chunks
    assert texts[-1]["finish_reason"] == "length", texts
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [], chunks[-1]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        PROMPT_TOKENS,
        OUT_TOKENS,
        PROMPT_TOKENS + OUT_TOKENS,
    ), usage

    d, p = _settled_deltas(pair, d0, p0)
    _assert_pulled_over_nixl(d, p, pair.decode.log_tail(20))
    labels = {"cluster": pair.cluster, "model": pair.model, "tenant": tenant}
    assert metric_value(page, "slaplane_request_ttft_seconds_count", **labels) == 1
    assert metric_value(page, "slaplane_route_decisions_total", role="prefill") == 1
    assert metric_value(page, "slaplane_route_decisions_total", role="decode") == 1
