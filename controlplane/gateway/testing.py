"""Start a gateway inside a test's event loop on a real localhost port.

async with running_gateway(store, prefill_url=[p.url], decode_url=[d.url]) as gw:
    ...  # gw.url, gw.gateway (state, metrics registry)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestServer

from controlplane.gateway.app import Gateway
from controlplane.gateway.config import GatewaySettings
from controlplane.gateway.upstream import WorkerClient
from controlplane.policy.predictor import LatencyPredictor
from controlplane.state.store import Store


@dataclass(frozen=True, slots=True)
class GatewayHandle:
    gateway: Gateway
    url: str


@contextlib.asynccontextmanager
async def running_gateway(
    store: Store,
    predictor: LatencyPredictor | None = None,
    *,
    client: WorkerClient | None = None,
    clock: Callable[[], float] | None = None,
    **overrides: Any,
) -> AsyncIterator[GatewayHandle]:
    """A Gateway with ``overrides`` applied to GatewaySettings (env ignored); ``client``
    replaces the upstream HTTP client, ``clock`` the request path's wall clock."""
    settings = GatewaySettings(_env_prefix="SLAPLANE_GW_TESTING_UNSET_", **overrides)
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    gw = Gateway(settings, store, predictor=predictor, client=client, **extra)
    ts = TestServer(gw.make_app(), host="127.0.0.1", handler_cancellation=True)
    await ts.start_server()
    try:
        yield GatewayHandle(gateway=gw, url=str(ts.make_url("")).rstrip("/"))
    finally:
        await ts.close()


async def until(cond: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    """Wait for a condition (tests): polls, never a fixed sleep, generous by default so a
    loaded host only makes it slower."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s: {what}")
        await asyncio.sleep(0.01)
