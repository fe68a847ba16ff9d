"""``slaplane gateway``: run the SLA-aware OpenAI-compatible gateway."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Coroutine
from typing import Annotated, Any

import typer


def main(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
    redis_url: Annotated[str | None, typer.Option(help="redis://… or memory://")] = None,
    cluster: Annotated[str | None, typer.Option()] = None,
    policy: Annotated[
        str | None, typer.Option(help="round_robin | least_loaded | kv_aware | sla")
    ] = None,
    policy_params: Annotated[
        str | None, typer.Option(help='JSON: {"<plugin type>": {param: value}}')
    ] = None,
    admission: Annotated[
        bool | None,
        typer.Option(help="admission control; --no-admission admits every routable request"),
    ] = None,
    admission_params: Annotated[str | None, typer.Option(help="JSON AdmissionParams")] = None,
    profile: Annotated[
        str | None, typer.Option(help="latency profile: shipped name or CSV path")
    ] = None,
    prefill_url: Annotated[list[str] | None, typer.Option(help="static prefill worker")] = None,
    decode_url: Annotated[list[str] | None, typer.Option(help="static decode worker")] = None,
    worker_url: Annotated[list[str] | None, typer.Option(help="static role-both worker")] = None,
    model: Annotated[str | None, typer.Option(help="model name of static workers")] = None,
    trust_tenant_header: Annotated[
        bool | None, typer.Option(help="accept X-Tenant-ID from a trusted front proxy")
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(help="address or CIDR whose X-Tenant-ID is believed (repeat; loopback)"),
    ] = None,
    require_key: Annotated[bool | None, typer.Option(help="401 without an API key")] = None,
    max_attempts: Annotated[int | None, typer.Option()] = None,
    log_level: Annotated[str | None, typer.Option()] = None,
    log_json: Annotated[bool | None, typer.Option()] = None,
    event_loop: Annotated[
        str | None, typer.Option(help="auto (uvloop when installed) | uvloop | asyncio")
    ] = None,
    worker_network: Annotated[
        list[str] | None,
        typer.Option(help="CIDR or host:port where workers may be reached (repeat; default any)"),
    ] = None,
    worker_ttl_s: Annotated[
        float | None, typer.Option(help="drop workers whose heartbeat is older (seconds)")
    ] = None,
) -> None:
    """Serve /v1/completions and /v1/chat/completions with SLA-aware admission and routing."""
    import asyncio

    from aiohttp import web

    from controlplane.config import build_settings
    from controlplane.gateway.app import Gateway
    from controlplane.gateway.config import GatewaySettings
    from controlplane.logs import setup_logging
    from controlplane.policy.predictor import ProfilePredictor
    from controlplane.state import open_store

    def js(v: str | None) -> Any:
        return json.loads(v) if v else None

    s = build_settings(
        GatewaySettings,
        host=host, port=port, redis_url=redis_url, cluster=cluster, policy=policy,
        policy_params=js(policy_params), admission=admission,
        admission_params=js(admission_params), profile=profile,
        prefill_url=prefill_url or None, decode_url=decode_url or None,
        worker_url=worker_url or None, model=model, trust_tenant_header=trust_tenant_header,
        trusted_proxies=trusted_proxy or None,
        require_key=require_key, max_attempts=max_attempts, log_level=log_level, log_json=log_json,
        event_loop=event_loop, worker_networks=worker_network or None, worker_ttl_s=worker_ttl_s,
    )  # fmt: skip
    setup_logging(s.log_level, s.log_json)
    predictor = None
    if s.profile:
        from controlplane.profiles import load_profile

        predictor = ProfilePredictor(load_profile(s.profile))

    async def run() -> None:
        store = open_store(s.redis_url)
        gw = Gateway(s, store, predictor=predictor)
        runner = web.AppRunner(gw.make_app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, s.host, s.port, backlog=4096)
        await site.start()
        typer.echo(f"slaplane gateway on http://{s.host}:{s.port} policy={s.policy}", err=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await store.close()

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run(), s.event_loop)


def run_loop(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run on uvloop when asked or available: its C loop cuts the per-request socket and
    scheduling cost that dominates a proxy hop's added latency (benchmarks/RESULTS.md)."""
    import asyncio

    if event_loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise typer.BadParameter("uvloop is not installed (pip install uvloop)") from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)
