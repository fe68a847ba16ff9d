"""Kubernetes actuator: patch the ``/scale`` subresource of one workload per role.

Uses the official ``kubernetes`` client (synchronous, so calls run in a thread).
A target is ``deployment/NAME``, ``statefulset/NAME``, ``replicaset/NAME``, or
``GROUP/VERSION/PLURAL/NAME`` for any resource that serves ``/scale`` (e.g. a LeaderWorkerSet or a
DynamoGraphDeployment-like CRD). The patch is a JSON merge patch of
``spec.replicas``: an absolute target, so re-applying it is harmless. The
controller cannot choose which pod Kubernetes removes on scale-down; it drains the
worker it would remove (a StatefulSet removes the highest ordinal, which is what
``pick_drain`` prefers on ties).

Every API call carries ``_request_timeout`` (``request_timeout_s``), and the thread it
runs in is awaited at most a little longer than that, so an API server that accepts the
connection and never answers costs one failed actuation (retried next tick), never
a hung reconcile loop.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from controlplane.controller.actuators.base import ActuationResult
from controlplane.policy.planner.types import ScaleDecision

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
_APPS_KINDS = {
    "deployment": "deployment",
    "statefulset": "stateful_set",
    "replicaset": "replica_set",
}


class KubernetesParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    namespace: str = "default"
    targets: dict[str, str] = Field(default_factory=dict, description="role → workload")
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    host: str | None = Field(default=None, description="API server URL override (tests)")
    field_manager: str = "slaplane-controller"
    request_timeout_s: float = Field(
        default=10.0, gt=0, description="per API call (connect + read), seconds"
    )


class KubernetesActuator:
    name = "kubernetes"

    def __init__(self, params: KubernetesParams) -> None:
        self.p = params
        self._api: Any = None

    def _client(self) -> Any:
        if self._api is None:
            # typed as Any: the client ships no type hints, and may be absent where unused
            client: Any = importlib.import_module("kubernetes.client")
            config: Any = importlib.import_module("kubernetes.config")

            if self.p.host:
                cfg = client.Configuration()
                cfg.host = self.p.host
                api_client = client.ApiClient(cfg)
            elif self.p.in_cluster:
                config.load_incluster_config()
                api_client = client.ApiClient()
            else:
                api_client = config.new_client_from_config(self.p.kubeconfig, self.p.context)
            self._api = (client.AppsV1Api(api_client), client.CustomObjectsApi(api_client))
        return self._api

    def _call(self, target: str, replicas: int | None) -> int:
        """Read (``replicas`` None) or patch one target; returns spec.replicas."""
        apps, custom = self._client()
        ns, parts = self.p.namespace, target.split("/")
        body = {"spec": {"replicas": replicas}}
        timeout = {"_request_timeout": self.p.request_timeout_s}
        kw = {"_content_type": MERGE_PATCH, "field_manager": self.p.field_manager, **timeout}
        if len(parts) == 2 and parts[0] in _APPS_KINDS:
            kind, name = _APPS_KINDS[parts[0]], parts[1]
            if replicas is None:
                res = getattr(apps, f"read_namespaced_{kind}_scale")(name, ns, **timeout)
            else:
                res = getattr(apps, f"patch_namespaced_{kind}_scale")(name, ns, body, **kw)
            return int(res.spec.replicas or 0)
        if len(parts) == 4:
            g, v, plural, name = parts
            if replicas is None:
                raw = custom.get_namespaced_custom_object_scale(g, v, ns, plural, name, **timeout)
            else:
                raw = custom.patch_namespaced_custom_object_scale(
                    g, v, ns, plural, name, body, **kw
                )
            return int(raw.get("spec", {}).get("replicas", 0))
        raise ValueError(f"bad kubernetes target {target!r}: use deployment/NAME, ...")

    async def _in_thread(self, target: str, replicas: int | None) -> int:
        """``_call`` in a worker thread, awaited at most a bit past the request timeout
        (the client's own timeout should fire first; this bounds what it does not cover,
        e.g. retries of idempotent reads)."""
        bound = 5 * self.p.request_timeout_s + 2.0
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._call, target, replicas), bound)
        except TimeoutError:
            raise TimeoutError(f"no answer from the API server in {bound:.1f}s") from None

    async def apply(self, decision: ScaleDecision) -> ActuationResult:
        applied: dict[str, int] = {}
        errors: list[str] = []
        for role, n in sorted(decision.desired.items()):
            target = self.p.targets.get(role)
            if target is None:
                continue
            try:
                current = await self._in_thread(target, None)
                if current != n:
                    await self._in_thread(target, n)
                applied[role] = n
            except Exception as exc:  # ApiException, connection errors: report, retry next tick
                errors.append(f"{role}: {type(exc).__name__}: {str(exc)[:200]}")
        if errors:
            log.warning("kubernetes scale failed", extra={"errors": errors})
        return ActuationResult(not errors, applied, "; ".join(errors))

    async def current_replicas(self) -> Mapping[str, int] | None:
        out: dict[str, int] = {}
        for role, target in self.p.targets.items():
            try:
                out[role] = await self._in_thread(target, None)
            except Exception as exc:
                log.warning(
                    "kubernetes replicas unknown",
                    extra={"role": role, "error": f"{type(exc).__name__}: {str(exc)[:200]}"},
                )
                return None
        return out or None

    async def close(self) -> None:
        if self._api is not None:
            await asyncio.to_thread(self._api[0].api_client.close)
            self._api = None
