"""The agent's own Prometheus metrics, on a registry owned by the agent (no global REGISTRY)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

SCRAPE_RESULTS = ("ok", "timeout", "error", "http", "parse_error", "internal")
"""``internal``: an unexpected error in the agent itself (logged with its traceback)."""


class AgentMetrics:
    """Counters of what the agent itself did: scrapes by result, parse/publish errors,
    scrape duration. Zero-initialised so rates work from the first Prometheus scrape."""

    def __init__(self, registry: CollectorRegistry, cluster: str, worker: str) -> None:
        labels = ("cluster", "worker")
        self.scrapes = Counter(
            "slaplane_agent_scrapes",
            "Scrapes of the worker's /metrics, by result.",
            [*labels, "result"],
            registry=registry,
        )
        self.parse_errors = Counter(
            "slaplane_agent_parse_errors",
            "Pages that could not be parsed or held no vLLM families.",
            labels,
            registry=registry,
        )
        self.publish_errors = Counter(
            "slaplane_agent_publish_errors",
            "Snapshots that could not be written to the store.",
            labels,
            registry=registry,
        )
        self.published = Counter(
            "slaplane_agent_snapshots_published",
            "Snapshots written to the store.",
            labels,
            registry=registry,
        )
        self.nonfinite_values = Counter(
            "slaplane_agent_nonfinite_values",
            "NaN/Inf values on the worker's page, treated as missing.",
            labels,
            registry=registry,
        )
        self.scrape_duration = Histogram(
            "slaplane_agent_scrape_duration_seconds",
            "Time to fetch and parse the worker's /metrics page.",
            labels,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        for r in SCRAPE_RESULTS:
            self.scrapes.labels(cluster, worker, r)
        self.parse_errors.labels(cluster, worker)
        self.publish_errors.labels(cluster, worker)
        self.published.labels(cluster, worker)
        self.nonfinite_values.labels(cluster, worker)
        self.scrape_duration.labels(cluster, worker)
        self._lv = (cluster, worker)

    def scrape(self, result: str, duration_s: float | None = None) -> None:
        self.scrapes.labels(*self._lv, result).inc()
        if duration_s is not None:
            self.scrape_duration.labels(*self._lv).observe(duration_s)

    def parse_error(self) -> None:
        self.parse_errors.labels(*self._lv).inc()

    def nonfinite(self, n: int) -> None:
        self.nonfinite_values.labels(*self._lv).inc(n)

    def publish(self, ok: bool) -> None:
        (self.published if ok else self.publish_errors).labels(*self._lv).inc()
