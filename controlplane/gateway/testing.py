"""Start a gateway inside a test's event loop on a real localhost port.

async with running_gateway(store, prefill_url=[p.url], decode_url=[d.url]) as gw:
    ...  # gw.url, gw.gateway (state, metrics registry)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestServer

from controlplane.gateway.app import Gateway
from controlplane.gateway.config import GatewaySettings
from controlplane.policy.predictor import LatencyPredictor
from controlplane.state.store import Store


@dataclass(frozen=True, slots=True)
class GatewayHandle:
    gateway: Gateway
    url: str


@contextlib.asynccontextmanager
async def running_gateway(
    store: Store, predictor: LatencyPredictor | None = None, **overrides: Any
) -> AsyncIterator[GatewayHandle]:
    """A Gateway with ``overrides`` applied to GatewaySettings (env ignored)."""
    settings = GatewaySettings(_env_prefix="SLAPLANE_GW_TESTING_UNSET_", **overrides)
    gw = Gateway(settings, store, predictor=predictor)
    ts = TestServer(gw.make_app(), host="127.0.0.1", handler_cancellation=True)
    await ts.start_server()
    try:
        yield GatewayHandle(gateway=gw, url=str(ts.make_url("")).rstrip("/"))
    finally:
        await ts.close()
