"""``slaplane sim-worker``: a vLLM-compatible worker backed by the performance model.

Stands in for a vLLM prefill/decode worker where no GPU is present. Heavy imports
live inside ``main`` so ``slaplane --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer


def main(
    host: Annotated[str | None, typer.Option(help="Bind address. (default: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port. (default: 8000)")] = None,
    role: Annotated[
        str | None,
        typer.Option(help="prefill | decode | both; decode adds vLLM's KV-fetch gauge. (both)"),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Served model name. (default: the profile's model)")
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(help="Profile name (cpu-tiny, h100-llama3.1-8b) or CSV path. (cpu-tiny)"),
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option(help="Worker id. (default: sim-HOST:PORT)")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for generated text, ids and fault draws. (0)")
    ] = None,
    time_scale: Annotated[
        float | None,
        typer.Option(help="Simulated seconds per wall second; 10 runs 10x faster. (1.0)"),
    ] = None,
    max_num_seqs: Annotated[
        int | None, typer.Option(help="Max running requests. (default: profile's)")
    ] = None,
    max_num_batched_tokens: Annotated[
        int | None, typer.Option(help="Token budget per step. (default: profile's)")
    ] = None,
    kv_capacity_tokens: Annotated[
        int | None, typer.Option(help="KV cache size in tokens. (default: profile's)")
    ] = None,
    block_size: Annotated[
        int | None, typer.Option(help="KV block size in tokens. (default: profile's)")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="Max prompt + output tokens. (default: profile's)")
    ] = None,
    kv_transfer_base_ms: Annotated[
        float | None, typer.Option(help="Decode-side delay before pulled KV is usable. (0)")
    ] = None,
    kv_transfer_us_per_token: Annotated[
        float | None, typer.Option(help="Decode-side KV pull time per token, µs. (0)")
    ] = None,
    kv_port: Annotated[
        int | None, typer.Option(help="remote_port advertised in prefill handles. (5600)")
    ] = None,
    error_rate: Annotated[
        float | None, typer.Option(help="Fraction of requests answered with a 500. (0)")
    ] = None,
    added_latency_ms: Annotated[
        float | None, typer.Option(help="Wall-clock delay added to each request. (0)")
    ] = None,
    hang_rate: Annotated[
        float | None, typer.Option(help="Fraction of requests that hang. (0)")
    ] = None,
    hang: Annotated[
        bool, typer.Option("--hang", help="Shorthand for --hang-rate 1 (every request hangs).")
    ] = False,
    hang_mode: Annotated[
        str | None,
        typer.Option(help="before: never answer; mid: stall a stream after 1 token. (before)"),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level. (INFO)")] = None,
    log_json: Annotated[bool | None, typer.Option(help="JSON log lines. (false)")] = None,
) -> None:
    """Run a simulated vLLM worker (OpenAI API, /metrics, P/D handoff, fault injection).

    Every flag also reads SLAPLANE_<FLAG> (e.g. SLAPLANE_TIME_SCALE); flags win.
    Faults can be changed at runtime: POST /sim/faults {"error_rate": 0.5}.
    """
    from aiohttp import web
    from pydantic import ValidationError

    from controlplane.config import build_settings
    from controlplane.logs import setup_logging
    from controlplane.profiles import load_profile
    from workers.sim.server import SimServer
    from workers.sim.settings import SimWorkerSettings

    try:
        settings = build_settings(
            SimWorkerSettings,
            host=host,
            port=port,
            role=role,
            model=model,
            profile=profile,
            worker_id=worker_id,
            seed=seed,
            time_scale=time_scale,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            kv_capacity_tokens=kv_capacity_tokens,
            block_size=block_size,
            max_model_len=max_model_len,
            kv_transfer_base_ms=kv_transfer_base_ms,
            kv_transfer_us_per_token=kv_transfer_us_per_token,
            kv_port=kv_port,
            error_rate=error_rate,
            added_latency_ms=added_latency_ms,
            hang_rate=1.0 if hang else hang_rate,
            hang_mode=hang_mode,
            log_level=log_level,
            log_json=log_json,
        )
    except ValidationError as exc:
        raise typer.BadParameter(_first_error(exc)) from None
    setup_logging(settings.log_level, settings.log_json)
    try:
        prof = load_profile(settings.profile)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from None
    server = SimServer(settings, prof)
    web.run_app(
        server.app(),
        host=settings.host,
        port=settings.port,
        handler_cancellation=True,
        access_log=None,
        print=None,
    )


def _first_error(exc: object) -> str:
    """One readable line from a pydantic ValidationError (no traceback for a bad flag)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)
