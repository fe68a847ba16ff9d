"""Advisory actuator (the default): acts on nothing. The decision is already logged,
counted and in the decisions stream by the loop; this only says so, so operators can
run the controller beside an existing autoscaler and compare."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from controlplane.controller.actuators.base import ActuationResult
from controlplane.policy.planner.types import ScaleDecision

log = logging.getLogger(__name__)


class AdvisoryActuator:
    name = "advisory"

    async def apply(self, decision: ScaleDecision) -> ActuationResult:
        log.info(
            "advisory scale",
            extra={"desired": dict(decision.desired), "observed": dict(decision.observed)},
        )
        return ActuationResult(True, {}, "advisory: not applied")

    async def current_replicas(self) -> Mapping[str, int] | None:
        return None

    async def close(self) -> None:
        return None
