"""``slaplane controller`` as a process: serves metrics, leads, exits cleanly on SIGTERM
and gives the lease back; bad flags are rejected without a traceback."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request

from controlplane.state import open_store
from tests.conftest import free_port

C = "ctl-cli"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
        return str(r.read().decode())


async def test_controller_process_leads_serves_metrics_and_stops(redis_url: str) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "controlplane.cli", "controller", "--redis-url", redis_url,
            "--cluster", C, "--holder", "cli", "--metrics-port", str(port),
            "--tick-s", "0.2"]  # fmt: skip
    proc = await asyncio.to_thread(
        subprocess.Popen, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    store = open_store(redis_url)
    try:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            try:
                text = await asyncio.to_thread(scrape, port)
                if f'slaplane_controller_is_leader{{cluster="{C}"}} 1.0' in text:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.2)
        assert f'slaplane_controller_is_leader{{cluster="{C}"}} 1.0' in text, text[-2000:]
        assert f'slaplane_controller_store_up{{cluster="{C}"}} 1.0' in text
        assert await store.lease_holder(C) == "cli"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        assert await store.lease_holder(C) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await store.close()


def test_bad_actuator_flags_are_rejected() -> None:
    argv = [sys.executable, "-m", "controlplane.cli", "controller", "--redis-url", "memory://",
            "--actuator", "webhook", "--metrics-port", "0"]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "webhook-url" in res.stderr and "Traceback" not in res.stderr
