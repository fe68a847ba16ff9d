"""Scaling actuators by name (house rule 3): advisory (default), webhook, kubernetes,
local. Each takes a params dict validated by its own pydantic model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controlplane.controller.actuators.advisory import AdvisoryActuator
from controlplane.controller.actuators.base import ActuationResult, Actuator


def _advisory(params: Mapping[str, Any], cluster: str) -> Actuator:
    return AdvisoryActuator()


def _webhook(params: Mapping[str, Any], cluster: str) -> Actuator:
    from controlplane.controller.actuators.webhook import WebhookActuator, WebhookParams

    return WebhookActuator(WebhookParams.model_validate(params), cluster)


def _kubernetes(params: Mapping[str, Any], cluster: str) -> Actuator:
    from controlplane.controller.actuators.kubernetes import KubernetesActuator, KubernetesParams

    return KubernetesActuator(KubernetesParams.model_validate(params))


def _local(params: Mapping[str, Any], cluster: str) -> Actuator:
    from controlplane.controller.actuators.local import LocalActuator, LocalParams

    return LocalActuator(LocalParams.model_validate({"cluster": cluster, **params}))


ACTUATORS: dict[str, Callable[[Mapping[str, Any], str], Actuator]] = {
    "advisory": _advisory,
    "webhook": _webhook,
    "kubernetes": _kubernetes,
    "local": _local,
}


def make_actuator(name: str, params: Mapping[str, Any], cluster: str = "default") -> Actuator:
    try:
        factory = ACTUATORS[name]
    except KeyError:
        raise ValueError(f"unknown actuator {name!r}; known: {sorted(ACTUATORS)}") from None
    return factory(params, cluster)


__all__ = ["ACTUATORS", "ActuationResult", "Actuator", "make_actuator"]
