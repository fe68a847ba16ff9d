"""The controller's policy core on the replay's virtual tick.

``PlannerHook`` is to replay what ``controller/loop.py`` is live: it hands
``ControlPlanner.on_tick`` the published snapshots, the request records finished
since the last tick and the replica counts (as the local actuator reports them),
keeps the control state the gateways would read back, and turns ``Effects`` into
the driver's ``ControlOutput``. Same planner object, same config model: the
policy is not forked per driver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controlplane.policy.control_fields import ControlState
from controlplane.policy.planner.control_planner import ControlPlanner, ControlPolicyConfig
from controlplane.policy.planner.outlook import resolve_local_prefill
from controlplane.policy.planner.scale import EngineLimits
from controlplane.policy.planner.types import Effects, TickInput
from controlplane.policy.predictor import ProfilePredictor
from controlplane.replay.driver import ControlHook, ControlOutput, ReplayConfig
from controlplane.schemas import RequestRecord, TenantSLA, WorkerSnapshot


class PlannerHook:
    def __init__(
        self,
        cfg: ReplayConfig,
        tenants: Mapping[str, TenantSLA],
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        prof = cfg.profile
        shape = cfg.shape
        budget = cfg.gpu_budget
        scale: dict[str, Any] = {
            "roles": ("prefill", "decode") if shape.disaggregated else ("both",),
            "gpu_budget": budget,
            "max_replicas": budget if budget is not None else max(8, shape.gpus),
        }
        # the controller prices TTFT as the replay's gateways route (local prefill or not)
        lp = resolve_local_prefill(cfg.policy, cfg.router_params)
        raw: dict[str, Any] = {
            "tick_s": cfg.control_interval_s,
            "scale": scale,
            "local_prefill": lp.model_dump(),
        }
        for k, v in (overrides or {}).items():
            if isinstance(v, Mapping) and isinstance(raw.get(k), dict):
                raw[k] = {**raw[k], **v}
            else:
                raw[k] = v
        self.planner = ControlPlanner(
            ControlPolicyConfig.model_validate(raw),
            ProfilePredictor(prof),
            prof,
            EngineLimits(prof.kv_capacity_tokens, prof.max_num_seqs),
        )
        self.tenants = dict(tenants)
        self.control = ControlState()
        self.last_effects: Effects | None = None
        """The latest tick's full decision (risks included), for benchmarks to read."""

    def tick(
        self,
        now_s: float,
        workers: Mapping[str, WorkerSnapshot],
        records: Sequence[RequestRecord],
        replicas: Mapping[str, int],
    ) -> ControlOutput:
        eff = self.planner.on_tick(
            TickInput(
                now_s=now_s,
                workers=workers,
                tenants=self.tenants,
                new_requests=tuple(records),
                control=self.control,
                current_replicas=dict(replicas),
            )
        )
        self.last_effects = eff
        self.control = ControlState(
            dict(eff.route_weights), eff.draining, dict(eff.admit), self.control.version + 1
        )
        sc = eff.scale
        return ControlOutput(
            route_weights=eff.route_weights,
            draining=eff.draining,
            admit=eff.admit,
            desired=dict(sc.desired) if sc is not None else None,
            remove=dict(sc.remove_workers) if sc is not None else {},
            next_tick_s=eff.next_tick_s,
            decisions=len(eff.decisions),
        )


def planner_factory(
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """A ``ControlFactory`` for ``Experiment``: one fresh planner per run."""

    def make(cfg: ReplayConfig, tenants: Mapping[str, TenantSLA]) -> ControlHook:
        return PlannerHook(cfg, tenants, overrides)

    return make
