"""Local actuator: start and stop ``slaplane sim-worker`` (or ``slaplane worker``)
processes on this machine, each with its telemetry agent. Used by the demo.

It only ever touches processes it started. Worker ids are ``PREFIX-ROLE-N``; ports
are picked free at start. On a scale-down it stops exactly the workers the planner
drained (``remove_workers``), else the newest. A process that died is forgotten, so
the next apply starts a replacement (level-triggered). Commands are templates with
``{slaplane} {port} {role} {worker} {profile} {cluster} {redis_url} {host}``;
``{slaplane}`` is this Python running ``controlplane.cli``, so no PATH is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from pydantic import BaseModel, ConfigDict, Field

from controlplane.controller.actuators.base import ActuationResult
from controlplane.policy.planner.types import ScaleDecision

log = logging.getLogger(__name__)

SIM_WORKER_CMD = (
    "{slaplane} sim-worker --host {host} --port {port} --role {role} --profile {profile} "
    "--worker-id {worker}"
)
AGENT_CMD = (
    "{slaplane} agent --worker-url http://{host}:{port} --worker-id {worker} --role {role} "
    "--cluster {cluster} --redis-url {redis_url}"
)


class LocalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    worker_cmd: str = SIM_WORKER_CMD
    agent_cmd: str | None = AGENT_CMD
    profile: str = "cpu-tiny"
    host: str = "127.0.0.1"
    prefix: str = "local"
    cluster: str = "default"
    redis_url: str = "redis://127.0.0.1:6379/0"
    stop_timeout_s: float = Field(default=10.0, gt=0)
    log_dir: str | None = None


@dataclass
class _Managed:
    worker: str
    port: int
    procs: list[asyncio.subprocess.Process]

    def alive(self) -> bool:
        return all(p.returncode is None for p in self.procs)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _order(worker: str) -> tuple[int, str]:
    tail = worker.rsplit("-", 1)[-1]
    return (int(tail) if tail.isdigit() else -1, worker)


class LocalActuator:
    name = "local"

    def __init__(self, params: LocalParams) -> None:
        self.p = params
        self.workers: dict[str, dict[str, _Managed]] = {}
        self._next: dict[str, int] = {}

    def _fmt(self, template: str, role: str, worker: str, port: int) -> list[str]:
        slaplane = f"{shlex.quote(sys.executable)} -m controlplane.cli"
        return shlex.split(
            template.format(
                slaplane=slaplane, port=port, role=role, worker=worker, profile=self.p.profile,
                cluster=self.p.cluster, redis_url=self.p.redis_url, host=self.p.host,
            )
        )  # fmt: skip

    def _log_file(self, worker: str, kind: str) -> IO[bytes] | None:
        if not self.p.log_dir:
            return None
        return open(f"{self.p.log_dir}/{worker}.{kind}.log", "ab")

    async def _spawn(self, argv: list[str], worker: str, kind: str) -> asyncio.subprocess.Process:
        f = self._log_file(worker, kind)
        out: IO[bytes] | int = f if f is not None else asyncio.subprocess.DEVNULL
        try:
            return await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )
        finally:
            if f is not None:
                f.close()  # the child holds its own descriptor

    async def _start(self, role: str) -> str:
        n = self._next[role] = self._next.get(role, 0) + 1
        worker = f"{self.p.prefix}-{role}-{n}"
        port = _free_port(self.p.host)
        procs = [await self._spawn(self._fmt(self.p.worker_cmd, role, worker, port), worker, "w")]
        if self.p.agent_cmd:
            argv = self._fmt(self.p.agent_cmd, role, worker, port)
            procs.append(await self._spawn(argv, worker, "agent"))
        self.workers.setdefault(role, {})[worker] = _Managed(worker, port, procs)
        log.info("started worker", extra={"worker": worker, "role": role, "port": port})
        return worker

    async def _stop(self, role: str, worker: str) -> None:
        m = self.workers.get(role, {}).pop(worker, None)
        if m is None:
            return
        for p in reversed(m.procs):  # agent first, so no scrape of a dying worker
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
                try:
                    await asyncio.wait_for(p.wait(), self.p.stop_timeout_s)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
                    await p.wait()
        log.info("stopped worker", extra={"worker": worker, "role": role})

    async def _reap(self) -> list[str]:
        dead = [(r, w) for r, ws in self.workers.items() for w, m in ws.items() if not m.alive()]
        for r, w in dead:
            await self._stop(r, w)
            log.warning("worker process exited", extra={"worker": w, "role": r})
        return [w for _, w in dead]

    async def apply(self, decision: ScaleDecision) -> ActuationResult:
        removed = await self._reap()
        for role, n in sorted(decision.desired.items()):
            mine = self.workers.setdefault(role, {})
            for w in decision.remove_workers.get(role, ()):
                if w in mine:
                    await self._stop(role, w)
                    removed.append(w)
            while len(mine) > n:
                w = max(mine, key=_order)
                await self._stop(role, w)
                removed.append(w)
            while len(mine) < n:
                await self._start(role)
        applied = {r: len(ws) for r, ws in self.workers.items()}
        return ActuationResult(True, applied, "", tuple(removed))

    async def current_replicas(self) -> Mapping[str, int] | None:
        return {r: sum(m.alive() for m in ws.values()) for r, ws in self.workers.items()}

    def ports(self) -> dict[str, int]:
        return {w: m.port for ws in self.workers.values() for w, m in ws.items()}

    async def close(self) -> None:
        for role, ws in list(self.workers.items()):
            for w in list(ws):
                await self._stop(role, w)
