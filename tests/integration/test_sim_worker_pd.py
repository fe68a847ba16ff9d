"""P/D handoff between a prefill sim and a decode sim, the way vLLM's NixlConnector does it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from workers.sim.testing import running_sim

FAST = {"time_scale": 20.0, "fixed_created": 1}


async def post(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        return r.status, await r.read()


async def test_prefill_handle_then_decode_skips_prefill(shared_dir: Path) -> None:
    real = json.loads((shared_dir / "fixtures/vllm-0.32.0/prefill-response-nixl.json").read_text())
    prompt = list(range(1, 601))
    async with (
        running_sim(role="prefill", port=8100, worker_id="p0", **FAST) as pre,
        running_sim(role="decode", port=8300, worker_id="d0", **FAST) as dec,
        running_sim(role="both", worker_id="solo", **FAST) as solo,
    ):
        status, raw = await post(
            pre.url + "/v1/completions",
            {
                "prompt": prompt,
                "max_tokens": 1,
                "kv_transfer_params": {"do_remote_decode": True},
            },
        )
        assert status == 200
        handle = json.loads(raw)["kv_transfer_params"]
        assert list(handle) == list(real["kv_transfer_params"])
        assert handle["do_remote_prefill"] is True and handle["remote_num_tokens"] == 600
        assert handle["remote_block_ids"] == [[1, 2, 3, 4, 5]]  # 600 tokens / 128-token blocks

        body = {"prompt": prompt, "max_tokens": 16, "stream": True, "ignore_eos": True}
        d_status, d_raw = await post(
            dec.url + "/v1/completions", body | {"kv_transfer_params": handle}
        )
        s_status, s_raw = await post(solo.url + "/v1/completions", body)
        assert d_status == s_status == 200

        def texts(raw: bytes) -> list[str]:
            events = [e[6:] for e in raw.decode().split("\n\n") if e.startswith("data: {")]
            return [json.loads(e)["choices"][0]["text"] for e in events]

        assert texts(d_raw) == texts(s_raw) and len(texts(d_raw)) == 16

        st = dec.server.engine.stats
        assert st.prompt_tokens_external_kv_transfer == 600
        assert st.prompt_tokens_local_compute == 0
        assert st.external_prefix_cache_hits_total == 600
        assert pre.server.engine.stats.prompt_tokens_local_compute == 600

        # ExampleConnector style: null params → the decode worker recomputes the prompt
        await post(
            dec.url + "/v1/completions", body | {"kv_transfer_params": None, "prompt": [9] * 300}
        )
        assert st.prompt_tokens_local_compute == 300

        async with aiohttp.ClientSession() as s, s.get(dec.url + "/metrics") as r:
            page = await r.text()
        assert (
            'vllm:prompt_tokens_by_source_total{engine="0",model_name="tiny-llama",'
            'source="external_kv_transfer"} 600.0' in page
        )
