"""A client without a key, or with a hostile body, costs the gateway nothing per tenant:
authentication comes before the body is read, client input never becomes a label,
clients cannot set ``kv_transfer_params``, and key guessing is bounded and throttled."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest

from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.tenants import AuthFailures, TenantDirectory
from controlplane.gateway.testing import GatewayHandle, running_gateway
from controlplane.state.store import Store
from tests.unit.gateway.conftest import AUTH, KEY
from workers.sim.testing import running_sim


@pytest.fixture
async def gw(mem: Store) -> AsyncIterator[GatewayHandle]:
    async with (
        running_sim(role="both", time_scale=20) as w,
        running_gateway(mem, worker_url=[w.url]) as g,
    ):
        yield g


async def _post(gw: GatewayHandle, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + "/v1/completions", data=json.dumps(body), headers=headers) as r,
    ):
        return r.status, json.loads(await r.read())


async def test_no_key_random_models_add_no_labels_and_parse_nothing(
    gw: GatewayHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import controlplane.gateway.app as app

    parsed = []
    real = app.parse_body
    monkeypatch.setattr(app, "parse_body", lambda *a, **k: parsed.append(1) or real(*a, **k))

    async def no_key_burst(n: int) -> str:
        for _ in range(n):
            body = {"model": f"m-{uuid.uuid4().hex}", "prompt": "x" * 10_000, "max_tokens": 2}
            status, err = await _post(gw, body, {})
            assert status == 401 and err["error"]["code"] == "missing_api_key"
        return generate_latest(gw.gateway.registry).decode()

    first = await no_key_burst(3)  # the one label set of unauthenticated refusals
    after = await no_key_burst(50)
    assert parsed == []  # no body was ever parsed
    assert "m-" not in after
    assert len(after.splitlines()) == len(first.splitlines())  # no growth per request
    # an authenticated request for an unknown model: 404, labelled "unknown"
    status, err = await _post(gw, {"model": "m-nope", "prompt": "x", "max_tokens": 2}, AUTH)
    assert status == 404 and err["error"]["param"] == "model"
    text = generate_latest(gw.gateway.registry).decode()
    assert "m-nope" not in text and 'model="unknown"' in text


@pytest.mark.parametrize(
    "params",
    [{"do_remote_decode": True}, {"do_remote_prefill": True, "remote_host": "10.9.9.9",
                                  "remote_port": 5555}, None],
)  # fmt: skip
async def test_clients_may_not_send_kv_transfer_params(gw: GatewayHandle, params: Any) -> None:
    body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2, "kv_transfer_params": params}
    status, err = await _post(gw, body, AUTH)
    assert status == 400
    assert err["error"]["param"] == "kv_transfer_params"
    assert err["error"]["code"] == "unsupported_parameter"


async def test_unknown_keys_are_a_bounded_lru(mem: Store) -> None:
    from prometheus_client import CollectorRegistry

    calls = 0
    real = mem.tenant_for_key

    async def counting(digest: str) -> str | None:
        nonlocal calls
        calls += 1
        return await real(digest)

    mem.tenant_for_key = counting  # type: ignore[method-assign]
    d = TenantDirectory(mem, GatewayMetrics(CollectorRegistry(), "c"), max_entries=16)
    for i in range(500):
        with pytest.raises(Exception, match="Incorrect API key"):
            await d.tenant_for_key(f"sk-guess-{i}")
    assert len(d._keys) == 16
    assert await d.tenant_for_key(KEY) == "acme"
    assert await d.tenant_for_key(KEY) == "acme" and calls == 501  # the hit is cached


def test_auth_failures_throttle_an_address_then_recover() -> None:
    f = AuthFailures(burst=3, per_minute=60.0, max_clients=2)
    for _ in range(3):
        f.check("1.2.3.4", 0.0)
        f.failed("1.2.3.4", 0.0)
    with pytest.raises(Exception, match="Too many failed") as exc:
        f.check("1.2.3.4", 0.0)
    assert getattr(exc.value, "retry_after_s", 0) >= 1.0
    f.check("5.6.7.8", 0.0)  # another address is not affected
    f.check("1.2.3.4", 1.5)  # refilled at 1/s
    f.failed("5.6.7.8", 0.0)
    f.failed("9.9.9.9", 0.0)
    assert len(f) == 2  # bounded


async def test_key_guessing_gets_429_before_any_lookup(mem: Store) -> None:
    async with (
        running_sim(role="both", time_scale=20) as w,
        running_gateway(mem, worker_url=[w.url], auth_failures_burst=5) as g,
    ):
        body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2}
        codes = [
            (await _post(g, body, {"Authorization": f"Bearer sk-wrong-{i}"}))[0] for i in range(8)
        ]
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
        status, err = await _post(g, body, {"Authorization": "Bearer sk-wrong-x"})
        assert status == 429 and err["error"]["code"] == "auth_rate_limited"


async def test_tenant_header_only_from_trusted_proxies(mem: Store) -> None:
    body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2}
    async with (
        running_sim(role="both", time_scale=20) as w,
        running_gateway(
            mem, worker_url=[w.url], trust_tenant_header=True, trusted_proxies=["10.0.0.0/8"]
        ) as untrusted,
        running_gateway(mem, worker_url=[w.url], trust_tenant_header=True) as trusted,
    ):
        status, err = await _post(untrusted, body, {"X-Tenant-ID": "acme"})
        assert status == 401 and err["error"]["code"] == "missing_api_key"
        assert (await _post(trusted, body, {"X-Tenant-ID": "acme"}))[0] == 200
