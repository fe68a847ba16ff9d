"""Assemble a controller from settings (used by the CLI, the demo and tests)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from controlplane.controller.actuators import Actuator, make_actuator
from controlplane.controller.leader import LeaderElector
from controlplane.controller.loop import Controller
from controlplane.controller.metrics import ControllerMetrics
from controlplane.controller.settings import ControllerSettings, default_holder
from controlplane.policy.planner.control_planner import ControlPlanner, ControlPolicyConfig
from controlplane.policy.planner.scale import EngineLimits
from controlplane.policy.predictor import ProfilePredictor
from controlplane.state import open_store
from controlplane.state.store import Store, StoreUnavailable

log = logging.getLogger(__name__)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def policy_config(s: ControllerSettings) -> ControlPolicyConfig:
    """Defaults, then the JSON file, then the flags (each more specific wins)."""
    cfg: dict[str, Any] = {"tick_s": s.tick_s}
    if s.policy_config:
        cfg = _deep_merge(cfg, json.loads(Path(s.policy_config).read_text()))
    scale = {
        "load_predictor": s.load_predictor, "interval_s": s.interval_s,
        "min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
        "gpu_budget": s.gpu_budget,
        "roles": tuple(r.strip() for r in s.roles.split(",") if r.strip()) if s.roles else None,
    }  # fmt: skip
    cfg = _deep_merge(cfg, {"scale": {k: v for k, v in scale.items() if v is not None}})
    return ControlPolicyConfig.model_validate(cfg)


def actuator_params(s: ControllerSettings) -> dict[str, Any]:
    if s.actuator == "webhook":
        if not s.webhook_url:
            raise ValueError("--webhook-url is required with --actuator webhook")
        return {"url": s.webhook_url}
    if s.actuator == "kubernetes":
        targets = dict(p.split("=", 1) for p in (s.k8s_targets or "").split(",") if "=" in p)
        if not targets:
            raise ValueError("--k8s-targets is required with --actuator kubernetes")
        return {"namespace": s.k8s_namespace, "targets": targets, "kubeconfig": s.kubeconfig,
                "in_cluster": s.k8s_in_cluster, "host": s.k8s_host,
                "request_timeout_s": s.k8s_request_timeout_s}  # fmt: skip
    if s.actuator == "local":
        p: dict[str, Any] = {
            "profile": s.profile,
            "redis_url": s.redis_url,
            "log_dir": s.local_log_dir,
        }
        if s.local_worker_cmd:
            p["worker_cmd"] = s.local_worker_cmd
        if s.local_no_agent:
            p["agent_cmd"] = None
        elif s.local_agent_cmd:
            p["agent_cmd"] = s.local_agent_cmd
        return p
    return {}


def build_core(s: ControllerSettings) -> ControlPlanner:
    from controlplane.profiles import load_profile

    prof = load_profile(s.profile)
    limits = EngineLimits(prof.kv_capacity_tokens, prof.max_num_seqs)
    return ControlPlanner(policy_config(s), ProfilePredictor(prof), prof, limits)


def build_controller(
    s: ControllerSettings,
    store: Store,
    registry: CollectorRegistry,
    actuator: Actuator | None = None,
) -> Controller:
    holder = s.holder or default_holder()
    act = actuator or make_actuator(s.actuator, actuator_params(s), s.cluster)
    return Controller(
        store, s.cluster, build_core(s), act, ControllerMetrics(registry, s.cluster),
        LeaderElector(store, s.cluster, holder, s.lease_ttl_ms),
    )  # fmt: skip


async def wake_on_tenant_changes(ctl: Controller, store: Store, retry_s: float = 1.0) -> None:
    """An SLA edit (tenant change notice) runs the next reconcile at once instead of at
    the next tick; the controller's own control writes are ignored. Lost notices only
    cost latency (the timer still runs), so errors just back off and resubscribe.

    A malformed event (not a JSON object, or a ``kind`` that is not a string) is logged,
    counted and skipped; one the store cannot even decode ends that subscription, so it
    is counted the same and the watcher resubscribes. Nothing but cancellation ends it."""
    counter = ctl.metrics.event_errors
    while True:
        try:
            async for event in store.subscribe_events():
                kind = event.get("kind") if isinstance(event, dict) else None
                if not isinstance(kind, str):
                    counter.labels(ctl.cluster, "malformed").inc()
                    log.warning(
                        "malformed event skipped", extra={"event_type": type(event).__name__}
                    )
                    continue
                if kind == "tenant":
                    ctl.wake()
        except StoreUnavailable:
            pass
        except asyncio.CancelledError:
            raise
        except ValueError as exc:  # undecodable message (JSON, encoding)
            counter.labels(ctl.cluster, "malformed").inc()
            log.warning("undecodable event; resubscribing", extra={"error": repr(exc)[:300]})
        except Exception:
            counter.labels(ctl.cluster, "error").inc()
            log.exception("tenant event watcher failed; resubscribing")
        await asyncio.sleep(retry_s)


async def serve(s: ControllerSettings) -> None:
    """Run until SIGINT/SIGTERM: metrics endpoint + reconcile loop."""
    from aiohttp import web
    from prometheus_client.aiohttp import make_aiohttp_handler

    registry = CollectorRegistry()
    store = open_store(s.redis_url)
    try:
        ctl = build_controller(s, store, registry)
    except Exception:
        await store.close()
        raise
    runner: web.AppRunner | None = None
    if s.metrics_port:
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, s.metrics_host, s.metrics_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("controller started", extra={"holder": ctl.elector.holder, "actuator": s.actuator})
    notices = asyncio.create_task(wake_on_tenant_changes(ctl, store))
    try:
        await ctl.run(stop)
    finally:
        notices.cancel()
        await asyncio.gather(notices, return_exceptions=True)
        await ctl.actuator.close()
        if runner is not None:
            await runner.cleanup()
        await store.close()
