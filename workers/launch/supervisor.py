"""Run vLLM and its agent: start, wait for /health, supervise, forward SIGTERM/SIGINT.

Each child gets its own process group (vLLM forks an engine core and a worker), so
stopping a child stops everything it started. vLLM exiting ends the launcher with
its exit code; the agent is restarted with backoff if it dies, since serving must
go on without telemetry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType

from workers.launch.command import LaunchSpec, agent_launch, nixl_check, vllm_launch
from workers.launch.settings import WorkerSettings

log = logging.getLogger(__name__)


class _Proc:
    def __init__(self, name: str, spec: LaunchSpec) -> None:
        self.name = name
        self.spec = spec
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.spec.env}
        self.p = subprocess.Popen(self.spec.argv, env=env, start_new_session=True)
        log.info("started %s", self.name, extra={"pid": self.p.pid})

    def poll(self) -> int | None:
        return None if self.p is None else self.p.poll()

    def terminate(self) -> None:
        """SIGTERM to the leader only: vLLM's API server then shuts its engine down in
        order (signalling the whole group makes the engine die under it)."""
        if self.p is not None and self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.p.terminate()

    def kill_group(self) -> None:
        """SIGKILL the whole group: the leader if still there and anything it left."""
        if self.p is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.p.pid, signal.SIGKILL)

    def wait(self, timeout_s: float) -> bool:
        if self.p is None:
            return True
        try:
            self.p.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False


def health_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _stop_all(procs: list[_Proc], grace_s: float) -> None:
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        if not p.wait(max(0.1, deadline - time.monotonic())):
            log.warning("%s ignored SIGTERM for %.0fs; killing", p.name, grace_s)
        p.kill_group()  # no-op when the group is already empty
        p.wait(5.0)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def run(s: WorkerSettings, stop: threading.Event | None = None) -> int:
    """Blocking; returns the exit code. ``stop`` lets tests end it without signals."""
    stop = stop or threading.Event()
    if not Path(s.vllm_python).exists():
        log.error("vLLM python not found: %s (make vllm-env)", s.vllm_python)
        return 2
    if s.kv_connector == "example":
        Path(s.kv_store_path).mkdir(parents=True, exist_ok=True)
    if (check := nixl_check(s, os.environ.get("PYTHONPATH"))) is not None:
        res = subprocess.run(
            check.argv, env={**os.environ, **check.env}, capture_output=True, text=True
        )
        if res.returncode != 0:
            log.error("NIXL not usable from %s: %s", s.vllm_python, res.stderr.strip())
            return 2
        if (port := s.nixl_side_channel_port) is not None and port >= _ephemeral_low():
            log.warning(
                "NIXL side-channel port %d is in the ephemeral range: vLLM binds it only "
                "after warm-up, when an outgoing connection may hold it (5600-style ports "
                "are safer)",
                port,
            )

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _on_signal)

    vllm = _Proc("vllm", vllm_launch(s, os.environ.get("PYTHONPATH")))
    agent = _Proc("agent", agent_launch(s)) if s.agent else None
    procs = [p for p in (agent, vllm) if p is not None]
    vllm.start()
    try:
        return _supervise(s, stop, vllm, agent)
    finally:
        _stop_all(procs, s.shutdown_grace_s)
        log.info("worker stopped", extra={"worker": s.resolved_worker_id})


def _supervise(s: WorkerSettings, stop: threading.Event, vllm: _Proc, agent: _Proc | None) -> int:
    t0 = time.monotonic()
    next_note = t0 + 10.0
    while not health_ok(s.url):
        if (rc := vllm.poll()) is not None:
            log.error("vLLM exited with %d before becoming healthy", rc)
            return rc or 1
        now = time.monotonic()
        if now - t0 > s.health_timeout_s:
            log.error("vLLM not healthy after %.0fs", s.health_timeout_s)
            return 1
        if now >= next_note:
            log.info("waiting for vLLM /health", extra={"elapsed_s": round(now - t0)})
            next_note = now + 10.0
        if stop.wait(0.5):
            return 0
    log.info(
        "vLLM healthy",
        extra={"url": s.url, "startup_s": round(time.monotonic() - t0, 1), "role": s.role.value},
    )
    backoff_s, restart_at = 1.0, 0.0
    if agent is not None:
        agent.start()
    while not stop.wait(0.5):
        if (rc := vllm.poll()) is not None:
            log.error("vLLM exited with %d", rc)
            return rc or 1
        if agent is not None and (arc := agent.poll()) is not None:
            now = time.monotonic()
            if restart_at == 0.0:
                log.warning("agent exited with %d; restarting in %.0fs", arc, backoff_s)
                restart_at = now + backoff_s
            elif now >= restart_at:
                agent.start()
                restart_at, backoff_s = 0.0, min(30.0, backoff_s * 2)
    return 0
