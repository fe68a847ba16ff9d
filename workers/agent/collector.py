"""Prometheus re-export of the latest snapshot, built at scrape time (custom collector).

Families are generated from whatever snapshot is current when Prometheus scrapes,
so nothing is cached between scrapes and a worker that goes away simply drops out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.schemas import WorkerSnapshot

LABELS = ("cluster", "worker", "role", "model")
_QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))


class SnapshotCollector(Collector):
    """Yields the DESIGN.md ``slaplane_worker_*`` families from ``latest()``.

    ``last_ok_s()`` is the wall time the values were last read from the worker, so
    ``telemetry_age_seconds`` keeps growing while the worker is down.
    """

    def __init__(
        self,
        latest: Callable[[], WorkerSnapshot | None],
        last_ok_s: Callable[[], float | None],
        clock: Callable[[], float],
    ) -> None:
        self._latest = latest
        self._last_ok_s = last_ok_s
        self._clock = clock

    def describe(self) -> list[Metric]:
        """No up-front description: the families depend on the snapshot (avoids a collect at
        registration time)."""
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self._latest()
        if snap is None:
            return
        values = [snap.cluster, snap.worker, snap.role, snap.model]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            fam = GaugeMetricFamily(f"slaplane_worker_{name}", doc, labels=LABELS)
            fam.add_metric(values, value)
            return fam

        yield gauge("up", "1 if the last scrape of the worker succeeded.", 1.0 if snap.up else 0.0)
        yield gauge(
            "kv_cache_usage_ratio",
            "KV cache blocks in use (0-1), vLLM kv_cache_usage_perc.",
            snap.kv_usage,
        )
        yield gauge("requests_running", "Requests in the running batch.", float(snap.running))
        yield gauge("requests_waiting", "Requests queued for scheduling.", float(snap.waiting))
        last_ok = self._last_ok_s()
        if last_ok is not None:
            yield gauge(
                "telemetry_age_seconds",
                "Seconds since the values were last read from the worker.",
                max(0.0, self._clock() - last_ok),
            )
        for metric, prefix in (("ttft", "ttft"), ("itl", "itl")):
            fam = GaugeMetricFamily(
                f"slaplane_worker_{metric}_seconds",
                f"{metric.upper()} quantiles over the agent's last window (absent when no data).",
                labels=[*LABELS, "quantile"],
            )
            for q, suffix in _QUANTILES:
                v: float | None = getattr(snap, f"{prefix}_{suffix}_ms")
                if v is not None:
                    fam.add_metric([*values, q], v / 1000.0)
            yield fam
