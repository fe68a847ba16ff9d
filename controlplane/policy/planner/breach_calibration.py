"""Online calibration of the exported breach probability against realised outcomes.

``breach.tenant_risk`` is a model: a log-normal miss probability (with the latency
calibrator's spread) pushed through a binomial objective test. It ranks well where load
explains breaches but is over-confident: a 99 % objective over ~15 requests breaks on
one miss, and a wide residual spread makes one miss look likely, so calm tenants were
exported at 0.2-0.9 for hours without a breach (``benchmarks/RESULTS.md``, "Tenant-level
breach prediction").

The controller sees what really happened one horizon later: a prediction made at tick
``t`` is about the tenant's requests that *arrive* in ``(t, t + horizon]``, and their
records (``arrival_ms``, ``sla_met``) come back once they finish. So, per tenant and SLO:

1. every tick's raw probabilities are kept as pending;
2. records add ``(arrival, met per SLO)`` to the tenant's recent arrivals;
3. once ``now >= t + horizon + settle_s`` (the window's requests have finished or been
   turned away), the pending prediction is labelled: breached when the met fraction of
   the window's arrivals is below the tenant's objective, the bench's label (no
   arrivals: no label, nothing could breach);
4. with at least ``min_samples`` labels, an isotonic (monotone) map from raw to realised
   frequency is fitted (scikit-learn's PAV, refitted every ``refit_every`` new labels
   over the last ``max_samples``), and the exported value is that map shrunk towards the raw
   value by ``prior_strength`` pseudo-samples: ``(n x iso(p) + k x p) / (n + k)``. So
   a tenant that never breached decays towards 0 without reading exactly 0, and one
   labelled breach lifts its neighbourhood at once.

Only the exported probability (``Effects.risks``, what the controller's metrics show) is
calibrated; the throttle and scaler act on the raw one, whose thresholds they were tuned
on (the raw value is kept in ``TenantRisk.raw_breach_probability``).

Deterministic, no clock: state in, ``now_s`` in, numbers out.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.planner.types import SLOS, TenantRisk
from controlplane.schemas import RequestRecord, TenantSLA


class BreachCalibrationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    min_samples: int = Field(default=30, ge=1)
    """Labelled (tick, tenant) predictions before a tenant's map is used."""
    prior_strength: float = Field(default=10.0, ge=0)
    """Pseudo-samples of the raw probability in the exported value."""
    settle_s: float = Field(default=30.0, ge=0)
    """Wait after the horizon before labelling, for the window's in-flight requests."""
    max_samples: int = Field(default=2000, ge=1)
    """Most recent labels a tenant's map is fitted on."""
    refit_every: int = Field(default=10, ge=1)
    """New labels between refits of a tenant's map."""


Met = tuple[bool, bool, bool]
"""A request's (ttft, itl, all) met."""


def record_met(r: RequestRecord, sla: TenantSLA) -> Met:
    """Per SLO as ``TenantSLA.judge`` says, the gateway's ``sla_requests_total`` labels
    (a rejected request misses every SLO); ``all`` is the gateway's ``sla_met`` when it
    wrote one (judged against the SLA of the moment)."""
    j = sla.judge(r.ttft_ms, r.tpot_ms, r.e2e_ms, r.outcome)
    return j.ttft, j.itl, j.met if r.sla_met is None else bool(r.sla_met)


class _IsoMap:
    """A fitted monotone map, evaluated as plain interpolation (no sklearn per call)."""

    __slots__ = ("x", "y")

    def __init__(self, x: list[float], y: list[float]) -> None:
        self.x, self.y = x, y

    def __call__(self, p: float) -> float:
        return float(np.interp(p, self.x, self.y))


def _fit(samples: Iterable[tuple[float, bool]]) -> _IsoMap:
    """Pool-adjacent-violators on the distinct raw values (scikit-learn's
    ``isotonic_regression``, a quarter of ``IsotonicRegression.fit``'s cost)."""
    from sklearn.isotonic import isotonic_regression

    arr = np.asarray(list(samples), dtype=float)
    xs, inv, cnt = np.unique(arr[:, 0], return_inverse=True, return_counts=True)
    freq = np.bincount(inv, weights=arr[:, 1]) / cnt
    ys = isotonic_regression(freq, sample_weight=cnt.astype(float), y_min=0.0, y_max=1.0)
    return _IsoMap(xs.tolist(), [float(v) for v in ys])


class _Tenant:
    __slots__ = ("arrivals", "fresh", "maps", "pending", "samples")

    def __init__(self, max_samples: int) -> None:
        self.pending: deque[tuple[float, tuple[float, ...]]] = deque()
        """(tick s, raw probability per SLO), oldest first."""
        self.arrivals: list[tuple[float, Met]] = []
        """(arrival s, met per SLO), sorted by arrival."""
        self.samples: tuple[deque[tuple[float, bool]], ...] = tuple(
            deque(maxlen=max_samples) for _ in SLOS
        )
        self.maps: list[_IsoMap | None] = [None] * len(SLOS)
        self.fresh = 0
        """Labels since the last fit."""


class BreachCalibrator:
    def __init__(self, params: BreachCalibrationParams, horizon_s: float) -> None:
        self.p = params
        self.horizon_s = horizon_s
        self._tenants: dict[str, _Tenant] = {}
        if params.enabled:
            import sklearn.isotonic  # noqa: F401  # pay the import at start-up, not on a tick

    def _state(self, tenant: str) -> _Tenant:
        st = self._tenants.get(tenant)
        if st is None:
            st = self._tenants[tenant] = _Tenant(self.p.max_samples)
        return st

    def observe(self, records: Iterable[RequestRecord], slas: Mapping[str, TenantSLA]) -> None:
        """Finished/rejected requests: arrivals of the windows still to be labelled."""
        for r in records:
            sla = slas.get(r.tenant)
            st = self._tenants.get(r.tenant)
            if sla is None or st is None or not st.pending:
                continue
            arrival_s = r.arrival_ms / 1000.0
            if arrival_s <= st.pending[0][0]:
                continue  # before every window still open
            bisect.insort(st.arrivals, (arrival_s, record_met(r, sla)))

    def label(self, now_s: float, slas: Mapping[str, TenantSLA]) -> None:
        """Label the predictions whose window has closed and settled; refit where due."""
        ready = now_s - self.horizon_s - self.p.settle_s
        for tenant, st in self._tenants.items():
            sla = slas.get(tenant)
            while st.pending and st.pending[0][0] <= ready:
                t, probs = st.pending.popleft()
                if sla is None:
                    continue
                arr = st.arrivals
                lo = bisect.bisect_right(arr, (t, (True, True, True)))
                hi = bisect.bisect_right(arr, (t + self.horizon_s, (True, True, True)))
                n = hi - lo
                if n == 0:
                    continue
                for i in range(len(SLOS)):
                    met = sum(1 for _, m in arr[lo:hi] if m[i])
                    st.samples[i].append((probs[i], met / n < sla.objective))
                st.fresh += 1
            keep_from = st.pending[0][0] if st.pending else now_s
            cut = bisect.bisect_right(st.arrivals, (keep_from, (True, True, True)))
            if cut:
                del st.arrivals[:cut]
            if st.fresh >= self.p.refit_every and len(st.samples[0]) >= self.p.min_samples:
                st.maps = [_fit(s) for s in st.samples]
                st.fresh = 0

    def calibrate(self, now_s: float, risks: Mapping[str, TenantRisk]) -> dict[str, TenantRisk]:
        """Remember this tick's raw predictions; return the exported (calibrated) risks."""
        out: dict[str, TenantRisk] = {}
        k = self.p.prior_strength
        for tenant, r in risks.items():
            st = self._state(tenant)
            raw = tuple(r.breach_probability.get(s, 0.0) for s in SLOS)
            st.pending.append((now_s, raw))
            n = len(st.samples[0])
            if n < self.p.min_samples or st.maps[0] is None:
                out[tenant] = r
                continue
            cal: dict[str, float] = {}
            for i, s in enumerate(SLOS):
                m = st.maps[i]
                cal[s] = raw[i] if m is None else (n * m(raw[i]) + k * raw[i]) / (n + k)
            # the whole SLA cannot be less likely to break than either part
            cal["all"] = max(cal["all"], cal["ttft"], cal["itl"])
            out[tenant] = replace(
                r, breach_probability=cal, raw_breach_probability=dict(r.breach_probability)
            )
        return out

    def labels(self, tenant: str) -> int:
        """Labelled predictions the tenant's map is fitted on (0 = unknown tenant)."""
        st = self._tenants.get(tenant)
        return len(st.samples[0]) if st is not None else 0
