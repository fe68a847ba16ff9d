"""The one table both the gateway and the replay driver build policies from.

``PLUGINS`` maps a plugin type name to its pydantic params model and a factory;
``POLICIES`` maps a ``--policy`` name to the plugins each role's profile runs.
``RouterConfig`` is parsed, defaulted and validated with every error collected,
then frozen; ``build_router`` turns it into a ``Router``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controlplane.policy.predictor import LatencyPredictor, ProfilePredictor
from controlplane.policy.request.admission import AdmissionParams, AdmissionPolicy
from controlplane.policy.request.prefix import PrefixIndex
from controlplane.policy.request.routers.base import Filter, Profile, Scorer
from controlplane.policy.request.routers.columns import ColumnStore
from controlplane.policy.request.routers.health import HealthFilter, HealthParams
from controlplane.policy.request.routers.kv_aware import KvAwareParams, KvAwareScorer
from controlplane.policy.request.routers.kv_room import KvRoomFilter, KvRoomParams
from controlplane.policy.request.routers.local_prefill import (
    POLICY_DEFAULT_MODE,
    LocalPrefill,
    LocalPrefillParams,
)
from controlplane.policy.request.routers.queue_depth import QueueDepthParams, QueueDepthScorer
from controlplane.policy.request.routers.round_robin import RoundRobinParams, RoundRobinScorer
from controlplane.policy.request.routers.router import Router
from controlplane.policy.request.routers.sla import SlaParams, SlaTtftScorer
from controlplane.policy.request.routers.sla_itl import SlaItlScorer


@dataclass(frozen=True, slots=True)
class Deps:
    """Shared objects a plugin factory may need (one prefix index per router)."""

    predictor: LatencyPredictor
    index: PrefixIndex


Plugin = Filter | Scorer
Factory = Callable[[str, Any, Deps], Plugin]


@dataclass(frozen=True, slots=True)
class PluginSpec:
    params: type[BaseModel]
    factory: Factory


PLUGINS: dict[str, PluginSpec] = {
    "health-filter": PluginSpec(HealthParams, lambda n, p, d: HealthFilter(n, p)),
    "kv-room-filter": PluginSpec(KvRoomParams, lambda n, p, d: KvRoomFilter(n, p)),
    "round-robin-scorer": PluginSpec(RoundRobinParams, lambda n, p, d: RoundRobinScorer(n, p)),
    "queue-depth-scorer": PluginSpec(QueueDepthParams, lambda n, p, d: QueueDepthScorer(n, p)),
    "kv-aware-scorer": PluginSpec(
        KvAwareParams, lambda n, p, d: KvAwareScorer(n, p, index=d.index)
    ),
    "sla-ttft-scorer": PluginSpec(
        SlaParams, lambda n, p, d: SlaTtftScorer(n, p, predictor=d.predictor, index=d.index)
    ),
    "sla-itl-scorer": PluginSpec(
        SlaParams, lambda n, p, d: SlaItlScorer(n, p, predictor=d.predictor)
    ),
}

# role → (filters, [(scorer, weight)]), by plugin type name
RoleSpec = tuple[tuple[str, ...], tuple[tuple[str, float], ...]]
POLICIES: dict[str, dict[str, RoleSpec]] = {
    "round_robin": {
        r: (("health-filter",), (("round-robin-scorer", 1.0),))
        for r in ("prefill", "decode", "unified")
    },
    "least_loaded": {
        r: (("health-filter",), (("queue-depth-scorer", 1.0),))
        for r in ("prefill", "decode", "unified")
    },
    "kv_aware": {
        "prefill": (("health-filter",), (("kv-aware-scorer", 1.0),)),
        "decode": (("health-filter", "kv-room-filter"), (("kv-aware-scorer", 1.0),)),
        "unified": (("health-filter", "kv-room-filter"), (("kv-aware-scorer", 1.0),)),
    },
    "sla": {
        "prefill": (("health-filter",), (("sla-ttft-scorer", 1.0),)),
        "decode": (("health-filter", "kv-room-filter"), (("sla-itl-scorer", 1.0),)),
        "unified": (
            ("health-filter", "kv-room-filter"),
            (("sla-ttft-scorer", 1.0), ("sla-itl-scorer", 1.0)),
        ),
    },
}


ROUTER_PARAMS: dict[str, type[BaseModel]] = {"local-prefill": LocalPrefillParams}
"""Router-level params that live beside the plugins' in ``RouterConfig.params`` (so every
driver that passes plugin params through passes these too)."""


class RouterConfig(BaseModel):
    """``--policy`` plus optional params per plugin type (e.g. from a JSON/YAML file),
    and the router-level ``ROUTER_PARAMS`` (``{"local-prefill": {"mode": "threshold"}}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    policy: str = "sla"
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    prefix_index_blocks: int = Field(default=200_000, ge=1)
    block_tokens: int = Field(default=16, ge=1)


def validate_router_config(cfg: RouterConfig) -> dict[str, BaseModel]:
    """Every plugin's validated params; raises ValueError listing *all* problems."""
    errors: list[str] = []
    if cfg.policy not in POLICIES:
        errors.append(f"unknown policy {cfg.policy!r}; known: {sorted(POLICIES)}")
    out: dict[str, BaseModel] = {}
    for type_name, spec in PLUGINS.items():
        raw = dict(cfg.params.get(type_name, {}))
        if "block_tokens" in spec.params.model_fields:
            raw.setdefault("block_tokens", cfg.block_tokens)
        try:
            out[type_name] = spec.params.model_validate(raw)
        except ValidationError as exc:
            errors += [
                f"{type_name}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            ]
    for key, model in ROUTER_PARAMS.items():
        try:
            out[key] = model.model_validate(dict(cfg.params.get(key, {})))
        except ValidationError as exc:
            errors += [f"{key}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    errors += [
        f"unknown plugin type {t!r}"
        for t in cfg.params
        if t not in PLUGINS and t not in ROUTER_PARAMS
    ]
    if errors:
        raise ValueError("invalid router config: " + "; ".join(errors))
    return out


def build_router(cfg: RouterConfig, predictor: LatencyPredictor | None = None) -> Router:
    params = validate_router_config(cfg)
    deps = Deps(predictor or ProfilePredictor(), PrefixIndex(cfg.prefix_index_blocks))
    columns = ColumnStore()  # one per router: the three profiles share the per-version rows

    def make(role: str) -> Profile:
        filters, scorers = POLICIES[cfg.policy][role]
        fs = [PLUGINS[t].factory(t, params[t], deps) for t in filters]
        ss = [(PLUGINS[t].factory(t, params[t], deps), w) for t, w in scorers]
        return Profile(f"{cfg.policy}/{role}", fs, ss, columns)  # type: ignore[arg-type]

    sla = params["sla-ttft-scorer"]
    assert isinstance(sla, SlaParams)
    lp = params["local-prefill"]
    assert isinstance(lp, LocalPrefillParams)
    local = LocalPrefill(
        lp,
        lp.mode or POLICY_DEFAULT_MODE.get(cfg.policy, "never"),
        predictor=deps.predictor,
        index=deps.index,
        block_tokens=cfg.block_tokens,
        assumed_prompt_tokens=sla.assumed_prompt_tokens,
    )
    return Router(
        cfg.policy,
        prefill=make("prefill"),
        decode=make("decode"),
        unified=make("unified"),
        predictor=deps.predictor,
        index=deps.index,
        block_tokens=cfg.block_tokens,
        assumed_prompt_tokens=sla.assumed_prompt_tokens,
        local=local,
    )


PREDICTORS: dict[str, Callable[[], LatencyPredictor]] = {"profile": ProfilePredictor}


def build_admission(params: Mapping[str, Any] | None = None) -> AdmissionPolicy:
    return AdmissionPolicy(AdmissionParams.model_validate(dict(params or {})))
