"""Tenant mixes: which SLA each trace request is held to.

Traces carry no tenant, so a tenants file (YAML or JSON) lists tenants with their
``TenantSLA`` fields plus a ``share`` of the traffic, and each request is assigned
one by a seeded draw on its index. The draw depends only on (seed, index), so
every policy and every rate scale sees the same request → tenant mapping, which
is what makes their attainment comparable.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.schemas import Priority, TenantSLA


@dataclass(frozen=True, slots=True)
class TenantShare:
    sla: TenantSLA
    share: float


@dataclass(frozen=True, slots=True)
class TenantMix:
    """Tenants with traffic shares (normalised to sum 1)."""

    tenants: tuple[TenantShare, ...]

    def __post_init__(self) -> None:
        if not self.tenants:
            raise ValueError("a tenant mix needs at least one tenant")
        names = [t.sla.tenant for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate tenant names in mix: {names}")
        if any(t.share < 0 for t in self.tenants) or sum(t.share for t in self.tenants) <= 0:
            raise ValueError("tenant shares must be ≥ 0 and sum to more than 0")

    @property
    def slas(self) -> dict[str, TenantSLA]:
        return {t.sla.tenant: t.sla for t in self.tenants}

    def assign(self, n: int, seed: int) -> list[str]:
        """Tenant name for request indices 0..n-1, a seeded weighted draw."""
        rng = random.Random(seed)
        names = [t.sla.tenant for t in self.tenants]
        weights = [t.share for t in self.tenants]
        return rng.choices(names, weights=weights, k=n)


def uniform_mix(ttft_ms: float = 2000.0, itl_ms: float = 50.0, name: str = "default") -> TenantMix:
    """One tenant with one SLA for all traffic (the DistServe goodput setting)."""
    return TenantMix((TenantShare(TenantSLA(tenant=name, ttft_ms=ttft_ms, itl_ms=itl_ms), 1.0),))


def mix_from_obj(obj: Any) -> TenantMix:
    """``{"tenants": [{tenant, priority, ttft_ms, itl_ms, ..., share}, ...]}`` or the bare list."""
    items = obj.get("tenants") if isinstance(obj, Mapping) else obj
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise ValueError("tenants file: expected a list under 'tenants'")
    out: list[TenantShare] = []
    errors: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            errors.append(f"tenants[{i}]: not a mapping")
            continue
        d = dict(item)
        share = float(d.pop("share", 1.0))
        try:
            out.append(TenantShare(TenantSLA.model_validate(d), share))
        except ValueError as exc:
            errors.append(f"tenants[{i}]: {exc}")
    if errors:
        raise ValueError("invalid tenants file:\n" + "\n".join(errors))
    return TenantMix(tuple(out))


def load_mix(path: Path | str) -> TenantMix:
    """Read a YAML (``.yaml``/``.yml``) or JSON tenants file."""
    p = Path(path)
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        return mix_from_obj(yaml.safe_load(text))
    return mix_from_obj(json.loads(text))


def priorities(mix: TenantMix) -> dict[str, Priority]:
    return {t.sla.tenant: t.sla.priority for t in mix.tenants}
