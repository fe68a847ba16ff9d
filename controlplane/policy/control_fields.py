"""The control hash contract between the controller (writer) and gateways (readers).

Fields of ``slaplane:{C}:control``:

- ``weight:<worker>``: route weight 0..1 (missing = 1.0; 0 = send no new requests);
- ``draining``: comma-separated worker ids that take no new requests (a JSON list is
  also accepted on read, so hand edits through redis-cli work);
- ``admit:<tenant>``: fraction 0..1 of the tenant's requests to admit (missing = 1.0);
- ``version``: bumped by ``Store.set_control`` on every write.

One module so both sides parse the same way, and pure so replay can use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

WEIGHT_PREFIX = "weight:"
ADMIT_PREFIX = "admit:"
DRAINING = "draining"
VERSION = "version"


def _fraction(raw: str, default: float = 1.0) -> float:
    try:
        v = float(raw)
    except ValueError:
        return default
    return min(1.0, max(0.0, v)) if v == v else default  # NaN → default


def parse_draining(raw: str) -> frozenset[str]:
    """Comma-separated ids, or a JSON list of ids; blanks ignored."""
    raw = raw.strip()
    if raw.startswith("["):
        try:
            items = json.loads(raw)
        except ValueError:
            items = []
        return frozenset(str(i) for i in items if str(i).strip())
    return frozenset(p.strip() for p in raw.split(",") if p.strip())


def format_draining(workers: frozenset[str] | set[str]) -> str:
    """Sorted comma-separated ids: one canonical text, so equal sets compare equal."""
    return ",".join(sorted(workers))


def format_fraction(v: float) -> str:
    """Three decimals: enough resolution, and stable text for write-on-change."""
    return f"{min(1.0, max(0.0, v)):.3f}"


@dataclass(frozen=True, slots=True)
class ControlState:
    """The decoded control hash."""

    route_weights: Mapping[str, float] = field(default_factory=dict)
    draining: frozenset[str] = frozenset()
    admit: Mapping[str, float] = field(default_factory=dict)
    version: int = 0

    def weight(self, worker: str) -> float:
        return self.route_weights.get(worker, 1.0)

    def admit_fraction(self, tenant: str) -> float:
        return self.admit.get(tenant, 1.0)


def parse_control(raw: Mapping[str, str]) -> ControlState:
    """Decode the hash; unknown fields are ignored so the contract can grow."""
    weights: dict[str, float] = {}
    admit: dict[str, float] = {}
    for k, v in raw.items():
        if k.startswith(WEIGHT_PREFIX):
            weights[k[len(WEIGHT_PREFIX) :]] = _fraction(v)
        elif k.startswith(ADMIT_PREFIX):
            admit[k[len(ADMIT_PREFIX) :]] = _fraction(v)
    try:
        version = int(raw.get(VERSION, "0") or 0)
    except ValueError:
        version = 0
    return ControlState(weights, parse_draining(raw.get(DRAINING, "")), admit, version)


def encode_control(
    route_weights: Mapping[str, float] | None = None,
    draining: frozenset[str] | None = None,
    admit: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """Fields for ``Store.set_control``; ``None`` parts are left out (not written)."""
    out: dict[str, str] = {}
    for w, v in (route_weights or {}).items():
        out[WEIGHT_PREFIX + w] = format_fraction(v)
    if draining is not None:
        out[DRAINING] = format_draining(draining)
    for t, v in (admit or {}).items():
        out[ADMIT_PREFIX + t] = format_fraction(v)
    return out


def changed_fields(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str]:
    """The subset of ``desired`` that differs from ``current`` (write only on change).

    A missing weight/admit field means 1.0 and a missing ``draining`` means none, so
    writing that default over a missing field is not a change.
    """
    out: dict[str, str] = {}
    for k, v in desired.items():
        cur = current.get(k)
        if cur is None:
            if (k.startswith((WEIGHT_PREFIX, ADMIT_PREFIX)) and _fraction(v) == 1.0) or (
                k == DRAINING and not v
            ):
                continue
            out[k] = v
        elif k == DRAINING:
            if parse_draining(cur) != parse_draining(v):
                out[k] = v
        elif k.startswith((WEIGHT_PREFIX, ADMIT_PREFIX)):
            if abs(_fraction(cur) - _fraction(v)) > 5e-4:
                out[k] = v
        elif cur != v:
            out[k] = v
    return out
