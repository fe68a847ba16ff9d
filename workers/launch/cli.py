"""``slaplane worker``: a real vLLM worker (prefill, decode or both) with its agent.
Heavy imports live inside ``main`` so ``slaplane --help`` stays fast."""

from __future__ import annotations

from typing import Annotated

import typer

from controlplane.schemas import Role


def main(
    role: Annotated[
        Role | None, typer.Option("--role", help="prefill | decode | both. (both)")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model directory (env SLAPLANE_MODEL).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="vLLM port. (default 8000)")] = None,
    host: Annotated[str | None, typer.Option("--host", help="(default 127.0.0.1)")] = None,
    worker_id: Annotated[
        str | None, typer.Option("--worker-id", help="(default host:port)")
    ] = None,
    served_model_name: Annotated[str | None, typer.Option("--served-model-name")] = None,
    vllm_python: Annotated[
        str | None,
        typer.Option(
            "--vllm-python",
            help="Python of the vLLM venv (env SLAPLANE_VLLM_PYTHON; "
            "default ~/.cache/slaplane/vllm-venv/bin/python).",
        ),
    ] = None,
    cpu_core: Annotated[
        str | None,
        typer.Option("--cpu-core", help="VLLM_CPU_OMP_THREADS_BIND: auto | 0 | 0-1. (auto)"),
    ] = None,
    kvcache_space_gib: Annotated[
        int | None, typer.Option("--kvcache-space-gib", help="VLLM_CPU_KVCACHE_SPACE. (1)")
    ] = None,
    max_model_len: Annotated[int | None, typer.Option("--max-model-len", help="(4096)")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="(float32)")] = None,
    kv_connector: Annotated[
        str | None, typer.Option("--kv-connector", help="example | nixl | none. (example)")
    ] = None,
    kv_role: Annotated[
        str | None,
        typer.Option("--kv-role", help="Override kv_producer | kv_consumer | kv_both."),
    ] = None,
    kv_store_path: Annotated[
        str | None,
        typer.Option("--kv-store-path", help="ExampleConnector directory, shared by P and D."),
    ] = None,
    nixl_side_channel_port: Annotated[
        int | None,
        typer.Option(
            "--nixl-side-channel-port",
            help="NIXL handshake port, unique per host, below the ephemeral range (e.g. 5600).",
        ),
    ] = None,
    nixl_side_channel_host: Annotated[
        str | None,
        typer.Option(
            "--nixl-side-channel-host",
            help="Address decode workers reach this worker's NIXL side channel at. (--host)",
        ),
    ] = None,
    nixl_pythonpath: Annotated[
        str | None, typer.Option("--nixl-pythonpath", help="Folder holding the nixl packages.")
    ] = None,
    vllm_arg: Annotated[
        list[str] | None,
        typer.Option("--vllm-arg", help="Extra vLLM argument (repeat; e.g. --vllm-arg=--seed=1)."),
    ] = None,
    health_timeout_s: Annotated[float | None, typer.Option("--health-timeout-s")] = None,
    agent: Annotated[
        bool | None, typer.Option("--agent/--no-agent", help="Run the agent. (on)")
    ] = None,
    agent_interval_ms: Annotated[int | None, typer.Option("--agent-interval-ms")] = None,
    agent_metrics_port: Annotated[int | None, typer.Option("--agent-metrics-port")] = None,
    plugin: Annotated[
        bool | None,
        typer.Option("--plugin/--no-plugin", help="Enable the in-process stat-logger plugin."),
    ] = None,
    plugin_worker_id: Annotated[str | None, typer.Option("--plugin-worker-id")] = None,
    plugin_interval_ms: Annotated[int | None, typer.Option("--plugin-interval-ms")] = None,
    cluster: Annotated[str | None, typer.Option("--cluster")] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url")] = None,
) -> None:
    """Start a real vLLM API server (P/D KV connector, CPU pinning), wait until healthy,
    run its agent beside it, and stop both on SIGTERM/SIGINT."""
    from pydantic import ValidationError

    from controlplane.config import build_settings
    from controlplane.logs import setup_logging
    from workers.launch.settings import WorkerSettings
    from workers.launch.supervisor import run

    try:
        settings = build_settings(
            WorkerSettings,
            role=role,
            model=model,
            port=port,
            host=host,
            worker_id=worker_id,
            served_model_name=served_model_name,
            vllm_python=vllm_python,
            cpu_core=cpu_core,
            kvcache_space_gib=kvcache_space_gib,
            max_model_len=max_model_len,
            dtype=dtype,
            kv_connector=kv_connector,
            kv_role=kv_role,
            kv_store_path=kv_store_path,
            nixl_side_channel_port=nixl_side_channel_port,
            nixl_side_channel_host=nixl_side_channel_host,
            nixl_pythonpath=nixl_pythonpath,
            vllm_args=tuple(vllm_arg) if vllm_arg else None,
            health_timeout_s=health_timeout_s,
            agent=agent,
            agent_interval_ms=agent_interval_ms,
            agent_metrics_port=agent_metrics_port,
            plugin=plugin,
            plugin_worker_id=plugin_worker_id,
            plugin_interval_ms=plugin_interval_ms,
            cluster=cluster,
            redis_url=redis_url,
        )
    except ValidationError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    setup_logging(settings.log_level, settings.log_json)
    raise typer.Exit(run(settings))
