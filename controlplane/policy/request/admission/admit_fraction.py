"""The controller's per-tenant admit fraction, applied deterministically.

A credit accumulator per tenant (credit += fraction; admit while credit ≥ 1)
admits exactly ⌊n x fraction⌋ of n requests with no randomness, so replay and
live agree. Priority rule: a tenant is never throttled harder than any tenant of
lower priority, i.e. premium is not shed while standard or batch still get in.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from controlplane.schemas import Priority


class AdmitFractionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def effective_fraction(
    tenant: str,
    priority: Priority,
    fractions: Mapping[str, float],
    priorities: Mapping[str, Priority],
) -> float:
    own = min(1.0, max(0.0, fractions.get(tenant, 1.0)))
    if own >= 1.0:
        return 1.0
    lower = [
        min(1.0, max(0.0, fractions.get(t, 1.0)))
        for t, p in priorities.items()
        if p.rank < priority.rank
    ]
    return max([own, *lower])


class AdmitFractionGate:
    type_name = "admit-fraction"

    def __init__(self, name: str = "admit-fraction", params: AdmitFractionParams | None = None):
        self.name = name
        self.params = params or AdmitFractionParams()
        self._credit: dict[str, float] = {}

    def admit(self, tenant: str, fraction: float) -> bool:
        if fraction >= 1.0:
            self._credit.pop(tenant, None)
            return True
        credit = min(1.0, self._credit.get(tenant, 0.0) + fraction)
        if credit >= 1.0 - 1e-9:
            self._credit[tenant] = credit - 1.0
            return True
        self._credit[tenant] = credit
        return False
