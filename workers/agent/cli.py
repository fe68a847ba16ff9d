"""``slaplane agent``: the worker-agent sidecar command. Heavy imports live inside ``main``
so ``slaplane --help`` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def main(
    worker_url: Annotated[
        str | None,
        typer.Option(
            "--worker-url",
            help="Base URL of the vLLM (or sim) worker; /metrics is appended. "
            "Env SLAPLANE_WORKER_URL. (default: http://127.0.0.1:8000)",
        ),
    ] = None,
    worker_id: Annotated[
        str | None,
        typer.Option(
            "--worker-id",
            help="Worker id in Redis and Prometheus labels. (default: host:port of --worker-url)",
        ),
    ] = None,
    role: Annotated[
        str | None,
        typer.Option("--role", help="Worker role: prefill | decode | both. (default: both)"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Model name to publish. (default: the page's model_name label)"
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option("--cluster", help="Cluster name (Redis key hash tag). (default: default)"),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="Store URL: redis://host:port/db, or memory:// (nothing shared). "
            "(default: redis://127.0.0.1:6379/0)",
        ),
    ] = None,
    interval_ms: Annotated[
        int | None,
        typer.Option(
            "--interval-ms",
            help="Scrape period in ms (100-250 recommended); the HTTP timeout is 80% of it. "
            "(default: 250)",
        ),
    ] = None,
    window_s: Annotated[
        float | None,
        typer.Option(
            "--window-s",
            help="How far back TTFT/ITL quantiles may reach when the last scrape saw no "
            "finished observation. (default: 5.0)",
        ),
    ] = None,
    down_after: Annotated[
        int | None,
        typer.Option(
            "--down-after",
            help="Consecutive failed scrapes before the worker is published as down "
            "(a single slow answer only skips one snapshot). (default: 2)",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Port for the agent's own Prometheus /metrics (slaplane_worker_*); 0 = off. "
            "(default: 0)",
        ),
    ] = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Take one sample, publish it (unless --from-file), exit."),
    ] = False,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="Read a saved /metrics page instead of scraping; never touches the store. "
            "With --once, quantiles are the page's lifetime (cumulative) histograms.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print each derived snapshot as one JSON line on stdout."),
    ] = False,
) -> None:
    """Scrape one worker's /metrics, derive SLA signals, publish snapshots to Redis and
    re-export them to Prometheus."""
    import asyncio

    from pydantic import ValidationError

    from controlplane.config import build_settings
    from controlplane.logs import setup_logging
    from workers.agent.runner import run_agent
    from workers.agent.settings import AgentSettings

    try:
        settings = build_settings(
            AgentSettings,
            worker_url=worker_url,
            worker_id=worker_id,
            role=role,
            model=model,
            cluster=cluster,
            redis_url=redis_url,
            interval_ms=interval_ms,
            window_s=window_s,
            metrics_port=metrics_port,
            down_after_failures=down_after,
        )
    except ValidationError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc
    setup_logging(settings.log_level, settings.log_json)
    code = asyncio.run(run_agent(settings, once=once, from_file=from_file, as_json=as_json))
    raise typer.Exit(code)
