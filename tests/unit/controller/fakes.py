"""Test doubles for the controller: a recording actuator and a store that can fail."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlplane.controller.actuators.base import ActuationResult
from controlplane.policy.planner.types import ScaleDecision
from controlplane.state.memory import MemoryStore
from controlplane.state.store import StoreUnavailable


class RecordingActuator:
    name = "recording"

    def __init__(self, replicas: Mapping[str, int] | None = None) -> None:
        self.applied: list[ScaleDecision] = []
        self.replicas = dict(replicas) if replicas is not None else None

    async def apply(self, decision: ScaleDecision) -> ActuationResult:
        self.applied.append(decision)
        if self.replicas is not None:
            self.replicas.update(decision.desired)
        return ActuationResult(True, dict(decision.desired))

    async def current_replicas(self) -> Mapping[str, int] | None:
        return self.replicas

    async def close(self) -> None:
        return None


class FlakyStore(MemoryStore):
    """A MemoryStore whose every call raises StoreUnavailable while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name.startswith("_") or name == "down" or not callable(attr):
            return attr
        if super().__getattribute__("down"):

            async def fail(*a: Any, **k: Any) -> Any:
                raise StoreUnavailable("injected outage")

            return fail
        return attr
