"""Frozen boundary types of the controller's policy core (``planner.ControlPlanner``).

A driver (live ``controller/loop.py`` or the replay driver) builds a ``TickInput``
from what it has read, calls ``on_tick`` and applies the ``Effects``. Nothing here
does I/O or reads a clock: ``now_s`` is always passed in (Dynamo planner layout:
``TickInput`` → ``PlannerEffects``). ``None`` means "no opinion".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane.policy.control_fields import ControlState
from controlplane.schemas import RequestRecord, TenantSLA, WorkerSnapshot

SLOS = ("ttft", "itl", "all")


@dataclass(frozen=True, slots=True)
class TickInput:
    """Everything the core may look at on one tick."""

    now_s: float
    workers: Mapping[str, WorkerSnapshot]
    tenants: Mapping[str, TenantSLA] = field(default_factory=dict)
    new_requests: Sequence[RequestRecord] = ()
    """Finished/rejected requests first seen since the previous tick."""
    control: ControlState = field(default_factory=ControlState)
    """The control hash as currently written (what gateways follow)."""
    current_replicas: Mapping[str, int] | None = None
    """Replicas per role as the actuator sees them; ``None`` = count live workers."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision with its reason and inputs (house rule 8)."""

    kind: str  # route | drain | admit | scale | calibrate | resync
    target: str  # worker, tenant or role
    value: Any
    reason: str
    inputs: Mapping[str, Any] = field(default_factory=dict)

    def to_record(self, now_s: float) -> dict[str, Any]:
        return {
            "ts_s": round(now_s, 3),
            "kind": self.kind,
            "target": self.target,
            "value": self.value,
            "reason": self.reason,
            "inputs": dict(self.inputs),
        }


@dataclass(frozen=True, slots=True)
class TenantRisk:
    """Predicted latency and SLA risk of one tenant over the horizon."""

    tenant: str
    predicted_ttft_ms: float
    predicted_itl_ms: float
    miss_probability: Mapping[str, float]
    """Per-request probability of missing each SLO (``ttft``, ``itl``, ``all``)."""
    breach_probability: Mapping[str, float]
    """Probability that the tenant's objective is broken over the horizon, per SLO."""
    observed_miss_ratio: float | None = None
    expected_requests: float = 0.0
    raw_breach_probability: Mapping[str, float] | None = None
    """The model's breach probability when ``breach_probability`` is the calibrated one
    (``breach_calibration``; None = not calibrated). The throttle and scaler act on this."""

    @property
    def breach(self) -> float:
        return self.breach_probability.get("all", 0.0)


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """Absolute replica targets per role, and which workers must go first."""

    desired: Mapping[str, int]
    observed: Mapping[str, int]
    remove_workers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Workers drained and ready to stop, per role (``local`` stops exactly these)."""
    reasons: Mapping[str, str] = field(default_factory=dict)

    def changes(self) -> dict[str, tuple[int, int]]:
        return {
            r: (self.observed.get(r, 0), n)
            for r, n in self.desired.items()
            if n != self.observed.get(r, 0) or self.remove_workers.get(r)
        }


@dataclass(frozen=True, slots=True)
class Effects:
    """What one tick decided. Drivers write the control fields only when they differ
    from what is stored, and hand ``scale`` to the actuator."""

    now_s: float
    route_weights: Mapping[str, float]
    draining: frozenset[str]
    admit: Mapping[str, float]
    risks: Mapping[str, TenantRisk]
    scale: ScaleDecision | None = None
    decisions: tuple[Decision, ...] = ()
    next_tick_s: float = 1.0
    diagnostics: Mapping[str, float] = field(default_factory=dict)
