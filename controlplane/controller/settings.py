"""``slaplane controller`` settings: CLI flags over ``SLAPLANE_<FIELD>`` env over defaults."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field

from controlplane.config import CommonSettings


def default_holder() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ControllerSettings(CommonSettings):
    actuator: Literal["advisory", "webhook", "kubernetes", "local"] = "advisory"
    holder: str | None = None
    """Lease holder id (default: host-pid)."""
    tick_s: float = Field(default=1.0, gt=0)
    lease_ttl_ms: int = Field(default=5000, ge=500)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    profile: str = "cpu-tiny"
    """Latency profile of the workers (name shipped with workers/sim, or a CSV path)."""
    policy_config: str | None = None
    """JSON file with ``ControlPolicyConfig`` overrides (nested, partial)."""
    load_predictor: str | None = None
    interval_s: float | None = Field(default=None, gt=0)
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    gpu_budget: int | None = Field(default=None, ge=0)
    roles: str | None = None
    """Comma-separated roles to plan before any worker is seen (``prefill,decode``)."""
    webhook_url: str | None = None
    k8s_namespace: str = "default"
    k8s_targets: str | None = None
    """``role=deployment/NAME,role=statefulset/NAME`` or ``role=GROUP/VERSION/PLURAL/NAME``."""
    kubeconfig: str | None = None
    k8s_in_cluster: bool = False
    k8s_host: str | None = None
    k8s_request_timeout_s: float = Field(default=10.0, gt=0)
    """Timeout of each Kubernetes API call; a call that times out is a failed actuation."""
    local_worker_cmd: str | None = None
    local_agent_cmd: str | None = None
    local_no_agent: bool = False
    local_log_dir: str | None = None
