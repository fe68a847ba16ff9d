"""`slaplane agent` as a real process beside a real `slaplane sim-worker`, with real Redis."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from controlplane.schemas import WorkerSnapshot
from controlplane.state import open_store
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture
def sim_worker() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = _spawn("sim-worker", "--port", str(port), "--role", "decode", "--time-scale", "1")
    yield f"http://127.0.0.1:{port}", proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


async def _snap(redis_url: str, timeout_s: float, pred: object) -> WorkerSnapshot:
    store = open_store(redis_url)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            s = (await store.get_snapshots("itp")).get("d1")
            if s is not None and pred(s):  # type: ignore[operator]
                return s
            await asyncio.sleep(0.05)
    finally:
        await store.close()
    raise AssertionError("no matching snapshot")


async def test_agent_process_with_sim_worker(
    sim_worker: tuple[str, subprocess.Popen[bytes]], redis_url: str
) -> None:
    url, sim = sim_worker
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(f"{url}/health") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        agent = _spawn(
            "agent", "--worker-url", url, "--worker-id", "d1", "--role", "decode",
            "--cluster", "itp", "--redis-url", redis_url, "--interval-ms", "100",
        )  # fmt: skip
        try:
            first = await _snap(redis_url, 15, lambda s: s.up)
            assert first.role == "decode" and first.kv_capacity_tokens
            async with http.get(f"{url}/v1/models") as r:
                model = (await r.json())["data"][0]["id"]
            assert first.model == model
            body = {"model": model, "prompt": "hello " * 50, "max_tokens": 16}
            await asyncio.gather(*[http.post(f"{url}/v1/completions", json=body) for _ in range(4)])
            done = await _snap(redis_url, 5, lambda s: s.requests_finished_total >= 4)
            assert done.ttft_p50_ms is not None and done.generation_tokens_total >= 64

            sim.send_signal(signal.SIGKILL)
            down = await _snap(redis_url, 3, lambda s: not s.up)
            assert down.requests_finished_total >= 4  # last values kept
            assert agent.poll() is None  # the agent survives its worker
        finally:
            agent.send_signal(signal.SIGTERM)
            rc = agent.wait(10)
        assert rc == 0, agent.stderr.read().decode() if agent.stderr else ""
