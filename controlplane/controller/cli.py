"""``slaplane controller``: predict SLA breaches and act (reroute, throttle, scale)."""

from __future__ import annotations

from typing import Annotated

import typer


def main(
    actuator: Annotated[
        str | None, typer.Option(help="advisory | webhook | kubernetes | local. (advisory)")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Store URL. (redis://127.0.0.1:6379/0)")
    ] = None,
    cluster: Annotated[str | None, typer.Option(help="Cluster name. (default)")] = None,
    holder: Annotated[str | None, typer.Option(help="Lease holder id. (host-pid)")] = None,
    tick_s: Annotated[float | None, typer.Option(help="Reconcile period, s. (1.0)")] = None,
    lease_ttl_ms: Annotated[int | None, typer.Option(help="Leader lease TTL, ms. (5000)")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus port; 0 = off. (9400)")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="Worker latency profile. (cpu-tiny)")] = None,
    policy_config: Annotated[
        str | None, typer.Option(help="JSON file of ControlPolicyConfig overrides.")
    ] = None,
    load_predictor: Annotated[
        str | None, typer.Option(help="constant | moving_average | ewma | holt_winters. (constant)")
    ] = None,
    interval_s: Annotated[float | None, typer.Option(help="Planner interval, s. (10)")] = None,
    min_replicas: Annotated[int | None, typer.Option(help="Min replicas per role. (1)")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Max replicas per role. (8)")] = None,
    gpu_budget: Annotated[int | None, typer.Option(help="Most GPUs in total. (none)")] = None,
    roles: Annotated[str | None, typer.Option(help="Roles to plan. (prefill,decode)")] = None,
    webhook_url: Annotated[str | None, typer.Option(help="URL for --actuator webhook.")] = None,
    k8s_namespace: Annotated[str | None, typer.Option(help="Namespace. (default)")] = None,
    k8s_targets: Annotated[
        str | None, typer.Option(help="role=deployment/NAME,role=statefulset/NAME,...")
    ] = None,
    kubeconfig: Annotated[str | None, typer.Option(help="kubeconfig path.")] = None,
    k8s_in_cluster: Annotated[
        bool | None, typer.Option(help="Use the pod's service account.")
    ] = None,
    local_log_dir: Annotated[str | None, typer.Option(help="Logs of local workers.")] = None,
    local_no_agent: Annotated[bool | None, typer.Option(help="Start no agents.")] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level. (INFO)")] = None,
    log_json: Annotated[bool | None, typer.Option(help="JSON log lines.")] = None,
) -> None:
    """Run the SLA controller (leader-elected; standbys take over within the lease).

    Every flag also reads SLAPLANE_<FLAG>; flags win.
    """
    import asyncio

    from pydantic import ValidationError

    from controlplane.config import build_settings
    from controlplane.controller.app import serve
    from controlplane.controller.settings import ControllerSettings
    from controlplane.logs import setup_logging

    try:
        s = build_settings(
            ControllerSettings, actuator=actuator, redis_url=redis_url, cluster=cluster,
            holder=holder, tick_s=tick_s, lease_ttl_ms=lease_ttl_ms, metrics_port=metrics_port,
            profile=profile, policy_config=policy_config, load_predictor=load_predictor,
            interval_s=interval_s, min_replicas=min_replicas, max_replicas=max_replicas,
            gpu_budget=gpu_budget, roles=roles, webhook_url=webhook_url,
            k8s_namespace=k8s_namespace, k8s_targets=k8s_targets, kubeconfig=kubeconfig,
            k8s_in_cluster=k8s_in_cluster, local_log_dir=local_log_dir,
            local_no_agent=local_no_agent, log_level=log_level, log_json=log_json,
        )  # fmt: skip
    except ValidationError as exc:
        raise typer.BadParameter(str(exc.errors()[0]["msg"])) from None
    setup_logging(s.log_level, s.log_json)
    try:
        asyncio.run(serve(s))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
