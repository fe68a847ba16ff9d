"""The supervisor against a fake vLLM (a tiny HTTP server answering /health)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.config import build_settings
from tests.conftest import free_port
from workers.launch.command import nixl_check
from workers.launch.settings import WorkerSettings
from workers.launch.supervisor import health_ok, run

FAKE = """\
import http.server, os, sys, time
argv = sys.argv
port = int(argv[argv.index("--port") + 1])
mode = os.environ.get("FAKE_MODE", "ok")
open(os.environ["FAKE_PIDFILE"], "w").write(str(os.getpid()))
if mode == "crash":
    sys.exit(3)
time.sleep(float(os.environ.get("FAKE_DELAY_S", "0")))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", port), H)
if mode == "die":
    srv.timeout = 0.2
    for _ in range(10):
        srv.handle_request()
    sys.exit(5)
srv.serve_forever()
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE)
    launcher = tmp_path / "python"
    launcher.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{script}" "$@"\n')
    launcher.chmod(0o755)
    pidfile = tmp_path / "pid"
    monkeypatch.setenv("FAKE_PIDFILE", str(pidfile))
    return {"python": str(launcher), "pidfile": pidfile, "kv": str(tmp_path / "kv")}


def _settings(fake: dict[str, Any], **kw: Any) -> WorkerSettings:
    return build_settings(
        WorkerSettings,
        model="/m",
        vllm_python=fake["python"],
        port=free_port(),
        agent=False,
        kv_store_path=fake["kv"],
        health_timeout_s=20.0,
        shutdown_grace_s=5.0,
        **kw,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_waits_for_health_then_stops_cleanly(fake: dict[str, Any], monkeypatch: Any) -> None:
    monkeypatch.setenv("FAKE_DELAY_S", "0.7")
    s = _settings(fake)
    stop = threading.Event()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(run(s, stop)))
    t.start()
    deadline = time.monotonic() + 15
    while not health_ok(s.url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health_ok(s.url)
    assert Path(fake["kv"]).is_dir()  # ExampleConnector store created
    pid = int(fake["pidfile"].read_text())
    stop.set()
    t.join(15)
    assert result == [0]
    assert not _alive(pid)


def test_exit_before_healthy_returns_its_code(fake: dict[str, Any], monkeypatch: Any) -> None:
    monkeypatch.setenv("FAKE_MODE", "crash")
    assert run(_settings(fake)) == 3


def test_exit_after_healthy_ends_the_launcher(fake: dict[str, Any], monkeypatch: Any) -> None:
    monkeypatch.setenv("FAKE_MODE", "die")
    assert run(_settings(fake)) == 5


def test_missing_vllm_python(fake: dict[str, Any]) -> None:
    s = _settings(fake)
    assert run(s.model_copy(update={"vllm_python": "/nonexistent/python"})) == 2


def test_nixl_without_nixl_packages_fails_fast(fake: dict[str, Any]) -> None:
    """The control plane's own venv has no nixl: refuse before starting vLLM."""
    s = _settings(fake, kv_connector="nixl", nixl_side_channel_port=free_port())
    s = s.model_copy(update={"vllm_python": sys.executable})
    t0 = time.monotonic()
    assert run(s) == 2
    assert time.monotonic() - t0 < 60  # refused up front, not after vLLM's start timeout
    assert not fake["pidfile"].exists()


def test_nixl_check_finds_packages(fake: dict[str, Any], tmp_path: Path) -> None:
    """The check passes with ``nixl`` and a backend package importable (stubs on
    --nixl-pythonpath here) and fails without them."""
    for pkg in ("nixl", "nixl_cu12"):
        (tmp_path / "np" / pkg).mkdir(parents=True)
        (tmp_path / "np" / pkg / "__init__.py").write_text("")
    s = _settings(
        fake,
        kv_connector="nixl",
        nixl_side_channel_port=free_port(),
        nixl_pythonpath=str(tmp_path / "np"),
    )
    check = nixl_check(s)
    assert check is not None
    ok = subprocess.run([sys.executable, *check.argv[1:]], env={**os.environ, **check.env})
    assert ok.returncode == 0
    bare = subprocess.run([sys.executable, *check.argv[1:]], env={**os.environ, "PYTHONPATH": ""})
    assert bare.returncode != 0
