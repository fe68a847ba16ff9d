"""Start a simulated worker inside a test's event loop on a real localhost port.

For the sim's own integration tests and for anyone (gateway, agent) who needs a
vLLM-shaped upstream in a test without a subprocess:

    async with running_sim(role="decode", time_scale=20) as sim:
        async with aiohttp.ClientSession() as s:
            await s.post(sim.url + "/v1/completions", json={...})
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestServer

from controlplane.profiles import load_profile
from workers.sim.server import SimServer
from workers.sim.settings import SimWorkerSettings


@dataclass(frozen=True, slots=True)
class SimHandle:
    server: SimServer
    url: str


@contextlib.asynccontextmanager
async def running_sim(**overrides: Any) -> AsyncIterator[SimHandle]:
    """A SimServer with ``overrides`` applied to SimWorkerSettings (env is ignored:
    tests must not depend on the caller's SLAPLANE_* variables)."""
    # a prefix no one sets: the caller's SLAPLANE_* variables must not leak into tests
    settings = SimWorkerSettings(_env_prefix="SLAPLANE_SIM_TESTING_UNSET_", **overrides)
    server = SimServer(settings, load_profile(settings.profile))
    ts = TestServer(server.app(), host="127.0.0.1")
    await ts.start_server()
    try:
        yield SimHandle(server=server, url=str(ts.make_url("")).rstrip("/"))
    finally:
        await ts.close()
