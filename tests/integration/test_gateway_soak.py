"""Soak: a mix of valid, malformed, refused, cancelled and disconnected requests against a
sim P/D pool behind the gateway on real Redis, after which nothing is left behind.

Every exit path must release what the request held (ledger entries, in-flight and
pending-prefill counters, held places, the tenant's concurrency slot in Redis, the
in-flight gauge) and the gateway's memory must stay flat. ``SLAPLANE_SOAK_S`` sets the
duration (20 s by default; ``make soak`` runs 600 s).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from controlplane.gateway.testing import GatewayHandle, running_gateway, until
from controlplane.schemas import RateLimit, TenantSLA
from controlplane.state import keys, open_store
from controlplane.state.store import Store
from workers.sim.testing import running_sim

SOAK_S = float(os.environ.get("SLAPLANE_SOAK_S", "20"))
KEY = "sk-soak"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "tiny-llama"


@pytest.fixture
async def rstore(redis_url: str) -> AsyncIterator[Store]:
    s = open_store(redis_url)
    await s.put_tenant(
        TenantSLA(
            tenant="soak", ttft_ms=2000, itl_ms=200, max_concurrency=12,
            rate_limit=RateLimit(rpm=1_000_000),
        )
    )  # fmt: skip
    await s.put_api_key(hashlib.sha256(KEY.encode()).hexdigest(), "soak")
    yield s
    await s.close()


async def _one(http: aiohttp.ClientSession, url: str, kind: str, rng: random.Random) -> str:
    stream = kind in ("stream", "cut")
    body = {"model": MODEL, "prompt": "soak " * rng.randint(1, 400),
            "max_tokens": rng.randint(1, 24), "stream": stream}  # fmt: skip
    headers = dict(AUTH)
    data: str | bytes
    if kind == "bad_json":
        data = b'{"model": "tiny-llama", "prompt": '
    elif kind == "bad_field":
        data = json.dumps({"model": MODEL, "prompt": "x", "max_tokens": "many"})
    elif kind == "no_key":
        headers, data = {}, json.dumps(body)
    elif kind == "unknown_model":
        data = json.dumps({"model": "nope", "prompt": "x"})
    elif kind == "kv_params":
        data = json.dumps({"model": MODEL, "prompt": "x", "kv_transfer_params": {}})
    else:
        data = json.dumps(body)
    async with http.post(url + "/v1/completions", data=data, headers=headers) as r:
        if kind == "cut":  # the client goes away mid-stream
            await r.content.readany()
            r.close()
            return "cut"
        await r.read()
        return str(r.status)


async def test_soak_leaves_nothing_behind(rstore: Store, redis_url: str) -> None:
    kinds = ["stream"] * 5 + ["plain"] * 3 + ["cut", "abandon", "bad_json", "bad_field",
                                              "no_key", "unknown_model", "kv_params"]  # fmt: skip
    seen: Counter[str] = Counter()
    async with (
        running_sim(role="prefill", time_scale=20) as p,
        running_sim(role="decode", time_scale=20) as d,
        running_gateway(rstore, prefill_url=[p.url], decode_url=[d.url]) as gw,
        aiohttp.ClientSession() as http,
    ):
        deadline = time.monotonic() + SOAK_S
        baseline: int | None = None

        async def client(i: int) -> None:
            crng = random.Random(i)
            while time.monotonic() < deadline:
                kind = crng.choice(kinds)
                task = asyncio.create_task(_one(http, gw.url, kind, crng))
                if kind == "abandon":  # sent, then the client disconnects at once
                    await asyncio.sleep(crng.uniform(0.0, 0.05))
                    task.cancel()
                try:
                    seen[f"{kind}:{await task}"] += 1
                except asyncio.CancelledError:
                    seen[f"{kind}:cancelled"] += 1
                except aiohttp.ClientError as exc:
                    seen[f"{kind}:{type(exc).__name__}"] += 1

        async def sample_memory() -> None:
            nonlocal baseline
            await asyncio.sleep(SOAK_S / 3)
            gc.collect()
            baseline = len(gc.get_objects())

        await asyncio.gather(*(client(i) for i in range(16)), sample_memory())
        await _settled(gw, rstore)
        gc.collect()
        objects = len(gc.get_objects())
    assert sum(seen.values()) > 50, seen
    for kind in ("stream:200", "plain:200", "bad_json:400", "bad_field:422", "no_key:401",
                 "unknown_model:404", "kv_params:400"):  # fmt: skip
        assert seen[kind] > 0, (kind, seen)
    assert baseline is not None and objects <= baseline * 1.10 + 20_000, (baseline, objects)


async def _settled(gw: GatewayHandle, store: Store) -> None:
    """Everything a request holds is given back once the last one has ended."""
    g = gw.gateway
    inflight = g.metrics.inflight.labels(g.s.cluster)

    def clean() -> bool:
        return (
            len(g.ledger) == 0
            and all(v == 0 for v in g.ledger.inflight.values())
            and all(v == 0 for v in g.ledger.pending_prefill_tokens.values())
            and all(v == 0 for v in g.ledger.waiting_by_rank.values())
            and g.ledger.held_count == 0
            and g.waitq.woken == 0
            and len(g.waitq) == 0
            and inflight._value.get() == 0
        )

    await until(clean, 60.0, "gateway state back to zero")
    r = store._r  # type: ignore[attr-defined]
    slots_key = keys.inflight_key(g.s.cluster, "soak")
    deadline = time.monotonic() + 60.0
    while await r.zcard(slots_key):
        assert time.monotonic() < deadline, "concurrency slots left leased in Redis"
        await asyncio.sleep(0.05)
