"""The sim worker over HTTP: vLLM byte format, determinism, bad input, faults, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from workers.sim.testing import running_sim

FIX = "fixtures/vllm-0.32.0"
FAST = {"time_scale": 20.0, "fixed_created": 1795508782}


def shape(obj: Any) -> Any:
    """Keys (in order) and value kinds, not values: what a client's parser depends on."""
    if isinstance(obj, dict):
        return [(k, shape(v)) for k, v in obj.items()]
    if isinstance(obj, list):
        return [shape(v) for v in obj[:1]]
    return type(obj).__name__


def sse_events(raw: bytes) -> list[str]:
    assert raw.endswith(b"\n\n")
    events = raw.decode().split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: ") :] for e in events]


async def post(url: str, body: dict[str, Any], **kw: Any) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, **kw) as r:
        return r.status, await r.read()


@pytest.mark.parametrize(
    ("path", "fixture", "body"),
    [
        ("/v1/completions", "completions-stream.txt", {"prompt": "Hello there, sim"}),
        (
            "/v1/chat/completions",
            "chat-stream.txt",
            {"messages": [{"role": "user", "content": "hi"}]},
        ),
    ],
)
async def test_stream_matches_vllm_format(
    shared_dir: Path, path: str, fixture: str, body: dict[str, Any]
) -> None:
    real = sse_events((shared_dir / FIX / fixture).read_bytes())
    async with running_sim(**FAST) as sim:
        req = {**body, "max_tokens": 12, "stream": True, "stream_options": {"include_usage": True}}
        status, raw = await post(sim.url + path, req)
    assert status == 200
    ours = sse_events(raw)
    assert len(ours) == len(real) and ours[-1] == real[-1] == "[DONE]"
    for mine, theirs in zip(ours[:-1], real[:-1], strict=True):
        assert shape(json.loads(mine)) == shape(json.loads(theirs))
    usage = json.loads(ours[-2])["usage"]
    assert usage["completion_tokens"] == 12
    assert json.loads(ours[-3])["choices"][0]["finish_reason"] == "length"


async def test_stream_without_usage_has_no_usage_chunk() -> None:
    async with running_sim(**FAST) as sim:
        status, raw = await post(
            sim.url + "/v1/completions", {"prompt": [5] * 40, "max_tokens": 3, "stream": True}
        )
    events = sse_events(raw)
    assert status == 200 and len(events) == 4 and "usage" not in events[-2]


async def test_non_stream_matches_vllm_format_and_counts_tokens(shared_dir: Path) -> None:
    real = json.loads((shared_dir / FIX / "prefill-response.json").read_bytes())
    async with running_sim(**FAST) as sim:
        status, raw = await post(
            sim.url + "/v1/completions", {"prompt": [3] * 433, "max_tokens": 1}
        )
        c_status, c_raw = await post(
            sim.url + "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "two words"}], "max_tokens": 4},
        )
    assert status == 200 and shape(json.loads(raw)) == shape(real)
    assert json.loads(raw)["usage"] == real["usage"] | {"completion_tokens": 1}
    chat = json.loads(c_raw)
    assert c_status == 200 and chat["object"] == "chat.completion"
    assert chat["usage"]["completion_tokens"] == 4 and chat["choices"][0]["message"]["content"]


async def test_same_request_same_bytes() -> None:
    """A gateway test can compare a proxied stream with a direct one byte for byte."""
    body = {"prompt": "determinism please", "max_tokens": 6, "stream": True}
    hdr = {"X-Request-Id": "fixed-id"}
    async with running_sim(**FAST) as sim:
        a = await post(sim.url + "/v1/completions", body, headers=hdr)
        b = await post(sim.url + "/v1/completions", body, headers=hdr)
    assert a == b and b'"id":"cmpl-fixed-id"' in a[1]


async def test_models_health_version() -> None:
    async with running_sim(**FAST) as sim, aiohttp.ClientSession() as s:
        async with s.get(sim.url + "/v1/models") as r:
            models = await r.json()
        async with s.get(sim.url + "/health") as r:
            assert r.status == 200
        async with s.get(sim.url + "/version") as r:
            assert (await r.json())["version"] == "0.32.0"
    assert models["data"][0]["id"] == "tiny-llama"


@pytest.mark.parametrize(
    ("raw", "status", "param"),
    [
        (b'{"prompt": ', 400, None),
        (b"[1, 2]", 400, None),
        (b'{"prompt": "x", "max_tokens": "many"}', 400, "max_tokens"),
        (b'{"prompt": "x", "stream": {"a": 1}}', 400, "stream"),
        (b'{"max_tokens": 3}', 400, "prompt"),
        (b'{"prompt": "x", "model": "gpt-9"}', 404, "model"),
        (b'{"prompt": "x", "n": 2}', 400, "n"),
        (b'{"prompt": [], "max_tokens": 1}', 400, "prompt"),
        (b'{"prompt": [1, 2, 3], "max_tokens": 5000}', 400, "max_tokens"),
        (b"x" * 5000, 413, None),
    ],
)
async def test_bad_input_gives_openai_errors(raw: bytes, status: int, param: str | None) -> None:
    async with running_sim(max_body_bytes=4096, **FAST) as sim, aiohttp.ClientSession() as s:
        headers = {"Content-Type": "application/json"}
        async with s.post(sim.url + "/v1/completions", data=raw, headers=headers) as r:
            body = await r.json()
            assert r.status == status
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == status
    assert err["param"] == param and "Traceback" not in err["message"]


async def test_unknown_route_is_json_404() -> None:
    async with (
        running_sim(**FAST) as sim,
        aiohttp.ClientSession() as s,
        s.get(sim.url + "/v2/nothing") as r,
    ):
        assert r.status == 404 and (await r.json())["error"]["code"] == 404


async def test_runtime_faults_error_and_latency() -> None:
    body = {"prompt": "x", "max_tokens": 1}
    async with running_sim(**FAST) as sim, aiohttp.ClientSession() as s:
        async with s.post(sim.url + "/sim/faults", json={"error_rate": 1.0}) as r:
            assert (await r.json())["error_rate"] == 1.0
        status, raw = await post(sim.url + "/v1/completions", body)
        assert status == 500 and json.loads(raw)["error"]["type"] == "InternalServerError"
        async with s.post(sim.url + "/sim/faults", json={"error_rate": 0, "added_latency_ms": 150}):
            pass
        t0 = time.monotonic()
        status, _ = await post(sim.url + "/v1/completions", body)
        assert status == 200 and time.monotonic() - t0 >= 0.15
        async with s.post(sim.url + "/sim/faults", json={"error_rate": 7}) as r:
            assert r.status == 400


async def test_hang_before_and_mid_stream_and_disconnect_aborts() -> None:
    async with running_sim(hang_rate=1.0, **FAST) as sim:
        timeout = aiohttp.ClientTimeout(total=0.3)
        with pytest.raises(asyncio.TimeoutError):
            await post(sim.url + "/v1/completions", {"prompt": "x"}, timeout=timeout)
        async with aiohttp.ClientSession() as s:
            await s.post(sim.url + "/sim/faults", json={"hang_mode": "mid"})
            body = {"prompt": [1] * 50, "max_tokens": 100, "stream": True}
            async with s.post(sim.url + "/v1/completions", json=body) as r:
                first = await r.content.readuntil(b"\n\n")
                assert first.startswith(b"data: {")
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(r.content.readuntil(b"\n\n"), 0.3)
        # a streaming client that leaves mid-way frees the engine
        await s.close()
        async with aiohttp.ClientSession() as s:
            await s.post(sim.url + "/sim/faults", json={"hang_rate": 0})
            body = {"prompt": [1] * 50, "max_tokens": 3000, "stream": True}
            async with s.post(sim.url + "/v1/completions", json=body) as r:
                await r.content.readuntil(b"\n\n")
        for _ in range(100):
            if sim.server.engine.num_running == 0:
                break
            await asyncio.sleep(0.02)
        assert sim.server.engine.num_running == 0
        assert sim.server.engine.stats.request_success_total["abort"] >= 1


def test_cli_serves_on_a_real_port(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    env = {**os.environ, "SLAPLANE_TIME_SCALE": "50"}
    cmd = [sys.executable, "-m", "controlplane.cli", "sim-worker", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        import urllib.request

        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/state", timeout=1) as r:
                    state = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert state["time_scale"] == 50 and state["model"] == "tiny-llama"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
