"""The controller's Prometheus metrics, on a registry it owns (house rule 10).

Names follow DESIGN.md; every series carries ``cluster``. Tenant series are
removed when a tenant disappears so deleted tenants do not linger at their last
value.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controlplane.policy.planner.types import SLOS, Effects

EVENT_ERRORS = ("malformed", "error")
"""``reason`` values of ``slaplane_controller_event_errors`` (never the event's content)."""


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry, cluster: str) -> None:
        self.registry = registry
        self.cluster = cluster
        c = ["cluster"]
        self.breach = Gauge(
            "slaplane_predicted_sla_breach_probability",
            "Probability the tenant's SLA objective is broken over the horizon",
            [*c, "tenant", "slo"], registry=registry,
        )  # fmt: skip
        self.miss = Gauge(
            "slaplane_predicted_sla_miss_probability",
            "Predicted probability that one request of the tenant misses the SLO",
            [*c, "tenant", "slo"], registry=registry,
        )  # fmt: skip
        self.ttft = Gauge(
            "slaplane_predicted_ttft_seconds", "Predicted TTFT over the horizon",
            [*c, "tenant"], registry=registry,
        )  # fmt: skip
        self.itl = Gauge(
            "slaplane_predicted_itl_seconds", "Predicted mean inter-token latency",
            [*c, "tenant"], registry=registry,
        )  # fmt: skip
        self.desired = Gauge(
            "slaplane_desired_replicas", "Replica target per role", [*c, "role"], registry=registry
        )
        self.current = Gauge(
            "slaplane_current_replicas", "Observed replicas per role", [*c, "role"],
            registry=registry,
        )  # fmt: skip
        self.admit = Gauge(
            "slaplane_admission_fraction", "Admit fraction per tenant", [*c, "tenant"],
            registry=registry,
        )  # fmt: skip
        self.weight = Gauge(
            "slaplane_route_weight", "Route weight per worker", [*c, "worker"], registry=registry
        )
        self.draining = Gauge("slaplane_draining_workers", "Workers draining", c, registry=registry)
        self.forecast_rate = Gauge(
            "slaplane_forecast_request_rate", "Forecast offered requests per second", c,
            registry=registry,
        )  # fmt: skip
        self.is_leader = Gauge(
            "slaplane_controller_is_leader", "1 while this controller holds the lease", c,
            registry=registry,
        )  # fmt: skip
        self.store_up = Gauge(
            "slaplane_controller_store_up", "1 while the store answers", c, registry=registry
        )
        self.reconciles = Counter(
            "slaplane_controller_reconcile", "Reconcile runs by result", [*c, "result"],
            registry=registry,
        )  # fmt: skip
        self.reconcile_seconds = Histogram(
            "slaplane_controller_reconcile_duration_seconds", "Reconcile duration", c,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )  # fmt: skip
        self.decisions = Counter(
            "slaplane_controller_decisions", "Decisions by kind and reason",
            [*c, "kind", "reason"], registry=registry,
        )  # fmt: skip
        self.actuations = Counter(
            "slaplane_controller_actuations", "Scale actuations by actuator and result",
            [*c, "actuator", "result"], registry=registry,
        )  # fmt: skip
        self.control_writes = Counter(
            "slaplane_controller_control_writes", "Writes of the control hash", c, registry=registry
        )
        self.event_errors = Counter(
            "slaplane_controller_event_errors",
            "Events-channel problems the tenant watcher skipped: malformed (not a JSON object, "
            "or an odd kind) or error (the subscription failed otherwise)",
            [*c, "reason"], registry=registry,
        )  # fmt: skip
        for reason in EVENT_ERRORS:
            self.event_errors.labels(cluster, reason)
        self._tenants: set[str] = set()
        self._workers: set[str] = set()
        self.is_leader.labels(cluster).set(0)
        self.store_up.labels(cluster).set(0)

    def observe(self, eff: Effects) -> None:
        cl = self.cluster
        tenants = set(eff.risks) | set(eff.admit)
        for gone in self._tenants - tenants:
            for slo in SLOS:
                for g in (self.breach, self.miss):
                    _remove(g, cl, gone, slo)
            for g in (self.ttft, self.itl, self.admit):
                _remove(g, cl, gone)
        self._tenants = tenants
        for t, r in eff.risks.items():
            for slo in SLOS:
                self.breach.labels(cl, t, slo).set(r.breach_probability.get(slo, 0.0))
                self.miss.labels(cl, t, slo).set(r.miss_probability.get(slo, 0.0))
            self.ttft.labels(cl, t).set(_finite(r.predicted_ttft_ms) / 1000.0)
            self.itl.labels(cl, t).set(_finite(r.predicted_itl_ms) / 1000.0)
        for t, f in eff.admit.items():
            self.admit.labels(cl, t).set(f)
        for gone in self._workers - set(eff.route_weights):
            _remove(self.weight, cl, gone)
        self._workers = set(eff.route_weights)
        for w, v in eff.route_weights.items():
            self.weight.labels(cl, w).set(v)
        self.draining.labels(cl).set(len(eff.draining))
        if eff.scale is not None:
            for role, n in eff.scale.desired.items():
                self.desired.labels(cl, role).set(n)
            for role, n in eff.scale.observed.items():
                self.current.labels(cl, role).set(n)
        if "forecast_rate_rps" in eff.diagnostics:
            self.forecast_rate.labels(cl).set(eff.diagnostics["forecast_rate_rps"])
        for d in eff.decisions:
            self.decisions.labels(cl, d.kind, d.reason).inc()


def _finite(v: float) -> float:
    return v if v < 1e12 else 1e12


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
