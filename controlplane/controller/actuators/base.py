"""What a scaling actuator is: absolute replica targets in, a result out.

Actuators set absolute targets, never "+1", so applying the same decision twice is
harmless (level-triggered). ``current_replicas`` lets an actuator that can see the
platform (Kubernetes /scale, local processes) report what exists; ``None`` means
"I cannot tell", and the controller counts live workers from telemetry instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from controlplane.policy.planner.types import ScaleDecision


@dataclass(frozen=True, slots=True)
class ActuationResult:
    ok: bool
    applied: Mapping[str, int] = field(default_factory=dict)
    detail: str = ""
    removed: tuple[str, ...] = ()
    """Workers this actuator stopped (the loop forgets their telemetry)."""


@runtime_checkable
class Actuator(Protocol):
    name: str

    async def apply(self, decision: ScaleDecision) -> ActuationResult: ...
    async def current_replicas(self) -> Mapping[str, int] | None: ...
    async def close(self) -> None: ...
