"""Wiring for ``slaplane agent``: settings → source, store, metrics, collector → Agent.

Kept apart from cli.py so tests and the benchmark can start an agent in-process
with the same wiring the command uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector

from controlplane.schemas import WorkerSnapshot
from controlplane.state import open_store
from controlplane.state.store import Store
from workers.agent.collector import SnapshotCollector
from workers.agent.loop import Agent, serve_metrics
from workers.agent.metrics import AgentMetrics
from workers.agent.scrape import FilePageSource, HttpPageSource, PageSource
from workers.agent.settings import AgentSettings
from workers.telemetry.derive import DeriveConfig, Identity

log = logging.getLogger("slaplane.agent")


def _print_json(snap: WorkerSnapshot) -> None:
    sys.stdout.write(json.dumps(snap.to_json_dict(), sort_keys=True) + "\n")
    sys.stdout.flush()


def build_agent(
    settings: AgentSettings,
    *,
    store: Store | None,
    from_file: Path | None = None,
    registry: CollectorRegistry | None = None,
    as_json: bool = False,
) -> Agent:
    """An Agent wired like the command: own registry with the snapshot collector,
    the agent's counters and process CPU/memory."""
    source: PageSource
    if from_file is not None:
        source = FilePageSource(from_file)
        worker = settings.worker_id or from_file.stem
        url = from_file.resolve().as_uri()
    else:
        source = HttpPageSource(settings.worker_url, settings.timeout_s)
        worker = settings.resolved_worker_id
        url = settings.worker_url
    ident = Identity(
        cluster=settings.cluster,
        worker=worker,
        role=settings.role.value,
        model=settings.model,
        url=url,
    )
    registry = registry if registry is not None else CollectorRegistry()
    agent = Agent(
        source,
        store,
        ident,
        interval_s=settings.interval_s,
        derive_config=DeriveConfig(window_s=settings.window_s),
        metrics=AgentMetrics(registry, settings.cluster, worker),
        publish_timeout_s=max(1.0, 4 * settings.interval_s),
        on_snapshot=_print_json if as_json else None,
        down_after_failures=settings.down_after_failures,
    )
    registry.register(SnapshotCollector(agent.latest, agent.last_ok_s, time.time))
    ProcessCollector(registry=registry)
    return agent


async def run_agent(
    settings: AgentSettings,
    *,
    once: bool = False,
    from_file: Path | None = None,
    as_json: bool = False,
) -> int:
    """Run until SIGINT/SIGTERM (or one sample with ``once``). Exit code 1 when a single
    sample found the worker down or unparsable."""
    try:
        store = None if from_file is not None else open_store(settings.redis_url)
    except ValueError as exc:  # unsupported URL scheme
        log.error("cannot open store", extra={"error": str(exc)})
        return 2
    registry = CollectorRegistry()
    agent = build_agent(
        settings, store=store, from_file=from_file, registry=registry, as_json=as_json
    )
    try:
        if once:
            agent.down_after_failures = 1  # a single sample: report what it saw
            snap = await agent.step()
            assert snap is not None
            if as_json:
                _print_json(snap)
            await agent.publish(snap)
            await agent.source.close()
            return 0 if snap.up else 1
        runner = None
        if settings.metrics_port:
            try:
                runner = await serve_metrics(registry, settings.metrics_port, settings.metrics_host)
            except OSError as exc:  # port taken: fail at start, not silently
                log.error("cannot serve metrics", extra={"error": str(exc)})
                return 2
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        log.info(
            "agent started",
            extra={
                "worker": agent.ident.worker,
                "url": agent.ident.url,
                "interval_ms": settings.interval_ms,
                "metrics_port": settings.metrics_port,
            },
        )
        try:
            await agent.run(stop)
        finally:
            if runner is not None:
                await runner.cleanup()
        return 0
    finally:
        if store is not None:
            await store.close()
