"""Every Prometheus metric the gateway exports, on a registry the caller owns.

Names follow DESIGN.md (prefix ``slaplane_``, base units, counters end ``_total``).
Labels: ``cluster``, ``model``, ``tenant`` (unknown tenants are ``default`` so the
label set stays bounded by what the operator API knows).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controlplane.schemas import TenantSLA

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5,
                     2.5, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0)  # fmt: skip
TOKEN_BUCKETS_S = (0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
                   0.15, 0.25, 0.5, 1.0, 2.5)  # fmt: skip
E2E_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                 60.0, 120.0, 300.0)  # fmt: skip
OVERHEAD_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01,
                      0.025, 0.05, 0.1)  # fmt: skip

_REQ = ("cluster", "model", "tenant")


@dataclass(slots=True)
class RequestChildren:
    """One (model, tenant)'s label children, looked up once: ``labels()`` takes a lock
    and builds a key tuple, and a finished request touches up to nine of them."""

    ttft: Any
    itl: Any
    tpot: Any
    e2e: Any
    outcomes: dict[str, Any] = field(default_factory=dict)
    sla: dict[tuple[str, str], Any] = field(default_factory=dict)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, cluster: str) -> None:
        self.cluster = cluster
        self._children: dict[tuple[str, str], RequestChildren] = {}
        self._routes: dict[tuple[str, str, str, str], Any] = {}
        r = registry
        self.ttft = Histogram(
            "slaplane_request_ttft_seconds", "Arrival to first content token sent, at the gateway.",
            _REQ, buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.itl = Histogram(
            "slaplane_request_itl_seconds", "Every gap between two content chunks sent.",
            _REQ, buckets=TOKEN_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.tpot = Histogram(
            "slaplane_request_tpot_seconds",
            "Per request mean time per output token after the first one.",
            _REQ, buckets=TOKEN_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            "slaplane_request_e2e_seconds", "Arrival to the last byte sent.",
            _REQ, buckets=E2E_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "slaplane_requests", "Finished requests by outcome (ok|rejected|error|cancelled).",
            (*_REQ, "outcome"), registry=r,
        )  # fmt: skip
        self.sla = Counter(
            "slaplane_sla_requests", "Requests judged against the tenant SLA (slo ttft|itl|all).",
            (*_REQ, "slo", "result"), registry=r,
        )  # fmt: skip
        self.rejections = Counter(
            "slaplane_admission_rejections", "Requests refused by admission, by reason.",
            (*_REQ, "reason"), registry=r,
        )  # fmt: skip
        self.routes = Counter(
            "slaplane_route_decisions", "Routing decisions by policy, role and worker.",
            ("cluster", "model", "policy", "role", "worker"), registry=r,
        )  # fmt: skip
        self.overhead = Histogram(
            "slaplane_gateway_overhead_seconds",
            "Gateway time before the upstream request is sent (auth, admission, routing).",
            ("cluster",), buckets=OVERHEAD_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.sla_target = Gauge(
            "slaplane_tenant_sla_target_seconds", "The tenant's SLA targets.",
            ("cluster", "tenant", "slo"), registry=r,
        )  # fmt: skip
        self.sla_objective = Gauge(
            "slaplane_tenant_sla_objective_ratio", "Fraction of requests that must meet the SLA.",
            ("cluster", "tenant"), registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "slaplane_gateway_route_fallbacks", "Filters that would have removed every worker.",
            ("cluster", "reason"), registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "slaplane_gateway_upstream_retries", "Upstream attempts retried on another worker.",
            ("cluster", "worker", "reason"), registry=r,
        )  # fmt: skip
        self.store_failures = Counter(
            "slaplane_gateway_store_failures",
            "Store operations that failed; the gateway failed open on last known state.",
            ("cluster", "op"), registry=r,
        )  # fmt: skip
        self.records_dropped = Counter(
            "slaplane_gateway_request_records_dropped",
            "Request records dropped unwritten (buffer full while the store was down).",
            ("cluster",), registry=r,
        )  # fmt: skip
        self.records_dropped.labels(cluster)
        self.inflight = Gauge(
            "slaplane_gateway_requests_inflight", "Requests being served now.", ("cluster",),
            registry=r,
        )  # fmt: skip
        self.breaker_open = Gauge(
            "slaplane_gateway_breaker_open", "1 while a worker's circuit breaker is open.",
            ("cluster", "worker"), registry=r,
        )  # fmt: skip

    def for_request(self, model: str, tenant: str) -> RequestChildren:
        """Cached children of the per-request families (bounded: tenants x models)."""
        ch = self._children.get((model, tenant))
        if ch is None:
            c = self.cluster
            ch = self._children[(model, tenant)] = RequestChildren(
                self.ttft.labels(c, model, tenant), self.itl.labels(c, model, tenant),
                self.tpot.labels(c, model, tenant), self.e2e.labels(c, model, tenant),
            )  # fmt: skip
        return ch

    def outcome(self, ch: RequestChildren, model: str, tenant: str, outcome: str) -> Any:
        child = ch.outcomes.get(outcome)
        if child is None:
            child = ch.outcomes[outcome] = self.requests.labels(
                self.cluster, model, tenant, outcome
            )
        return child

    def sla_result(self, ch: RequestChildren, model: str, tenant: str, slo: str, res: str) -> Any:
        child = ch.sla.get((slo, res))
        if child is None:
            child = ch.sla[(slo, res)] = self.sla.labels(self.cluster, model, tenant, slo, res)
        return child

    def route(self, model: str, policy: str, role: str, worker: str) -> Any:
        """Cached ``route_decisions_total`` child (bounded: models x roles x workers)."""
        key = (model, policy, role, worker)
        child = self._routes.get(key)
        if child is None:
            child = self._routes[key] = self.routes.labels(self.cluster, *key)
        return child

    def set_tenant(self, sla: TenantSLA) -> None:
        """Publish a tenant's targets (and zero its counters so rates start at 0)."""
        c, t = self.cluster, sla.tenant
        self.sla_target.labels(c, t, "ttft").set(sla.ttft_ms / 1000.0)
        self.sla_target.labels(c, t, "itl").set(sla.itl_ms / 1000.0)
        if sla.e2e_ms is not None:
            self.sla_target.labels(c, t, "e2e").set(sla.e2e_ms / 1000.0)
        self.sla_objective.labels(c, t).set(sla.objective)

    def remove_tenant(self, tenant: str) -> None:
        for slo in ("ttft", "itl", "e2e"):
            with contextlib.suppress(KeyError):
                self.sla_target.remove(self.cluster, tenant, slo)
        with contextlib.suppress(KeyError):
            self.sla_objective.remove(self.cluster, tenant)
