"""A stand-in for vLLM 0.32's ``PrometheusStatLogger`` (not a test module).

The families slaplane reads, declared with vLLM's names, labels and default bucket bounds
in a private prometheus_client registry, and updated from ``SchedulerStats``/
``IterationStats``-shaped objects the way ``vllm/v1/metrics/loggers.py`` ``record()``
does. ``page()`` is what the agent would scrape from that vLLM's /metrics. Also: random
stat calls (``random_stats``), shared clocks and a page source, to drive the agent and
the plugin side by side.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# vllm/v1/metrics/buckets.py (0.32.0), written out here rather than imported from slaplane
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0]  # fmt: skip
SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
T0_WALL_S = 1_795_500_000.0
T0_MONO_S = 1000.0


class VllmMetrics:
    def __init__(self, model: str, *, num_gpu_blocks: int = 1024, block_size: int = 128) -> None:
        self.registry = reg = CollectorRegistry()
        lab = ["model_name", "engine"]
        lv = (model, "0")

        def gauge(name: str) -> Any:
            return Gauge(name, name, lab, registry=reg).labels(*lv)

        def counter(name: str) -> Any:
            return Counter(name, name, lab, registry=reg).labels(*lv)

        self.running = gauge("vllm:num_requests_running")
        self.waiting = gauge("vllm:num_requests_waiting")
        by_reason = Gauge(
            "vllm:num_requests_waiting_by_reason", "w", [*lab, "reason"], registry=reg
        )
        self.waiting_capacity = by_reason.labels(*lv, "capacity")
        self.waiting_deferred = by_reason.labels(*lv, "deferred")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc")
        self.prefix_queries = counter("vllm:prefix_cache_queries")
        self.prefix_hits = counter("vllm:prefix_cache_hits")
        self.ext_queries = counter("vllm:external_prefix_cache_queries")
        self.ext_hits = counter("vllm:external_prefix_cache_hits")
        self.preempted = counter("vllm:num_preemptions")
        self.prompt_tokens = counter("vllm:prompt_tokens")
        by_source = Counter("vllm:prompt_tokens_by_source", "p", [*lab, "source"], registry=reg)
        self.prompt_by_source = {s: by_source.labels(*lv, s) for s in SOURCES}
        self.generation_tokens = counter("vllm:generation_tokens")
        success = Counter("vllm:request_success", "s", [*lab, "finished_reason"], registry=reg)
        self.success = {r: success.labels(*lv, r) for r in ("stop", "length", "abort")}
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "t", lab, buckets=TTFT_BUCKETS, registry=reg
        ).labels(*lv)
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds", "i", lab, buckets=ITL_BUCKETS, registry=reg
        ).labels(*lv)
        Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            ["block_size", "num_gpu_blocks", "engine"],
            registry=reg,
        ).labels(str(block_size), str(num_gpu_blocks), "0").set(1)

    def record(self, sched: Any, it: Any) -> None:
        if sched is not None:
            self.running.set(sched.num_running_reqs)
            self.waiting.set(sched.num_waiting_reqs + sched.num_skipped_waiting_reqs)
            self.waiting_capacity.set(sched.num_waiting_reqs)
            self.waiting_deferred.set(sched.num_skipped_waiting_reqs)
            self.kv_usage.set(sched.kv_cache_usage)
            self.prefix_queries.inc(sched.prefix_cache_stats.queries)
            self.prefix_hits.inc(sched.prefix_cache_stats.hits)
            ext = sched.connector_prefix_cache_stats
            if ext is not None:
                self.ext_queries.inc(ext.queries)
                self.ext_hits.inc(ext.hits)
        if it is None:
            return
        self.preempted.inc(it.num_preempted_reqs)
        pts = it.prompt_token_stats
        self.prompt_tokens.inc(pts.total)
        self.prompt_by_source["local_compute"].inc(pts.computed)
        self.prompt_by_source["local_cache_hit"].inc(pts.local_cache_hit)
        self.prompt_by_source["external_kv_transfer"].inc(pts.external_kv_transfer)
        self.generation_tokens.inc(it.num_generation_tokens)
        for v in it.time_to_first_tokens_iter:
            self.ttft.observe(v)
        for v in it.inter_token_latencies_iter:
            self.itl.observe(v)
        for req in it.finished_requests:
            self.success[req.finish_reason].inc()

    def page(self) -> str:
        return generate_latest(self.registry).decode()


class Clock:
    """Both sources read the same injected clocks (0.25 s steps are exact in binary)."""

    def __init__(self) -> None:
        self.t = 0.0

    def wall_s(self) -> float:
        return T0_WALL_S + self.t

    def wall_ms(self) -> int:
        return int((T0_WALL_S + self.t) * 1000)

    def mono(self) -> float:
        return T0_MONO_S + self.t


class PageSource:
    def __init__(self, metrics: VllmMetrics) -> None:
        self.metrics = metrics

    async def fetch(self) -> str:
        return self.metrics.page()

    async def close(self) -> None:
        return None


def _latency(rng: random.Random, bounds: list[float]) -> float:
    """Inside a bucket, exactly on a bound, or past the last one (the +Inf bucket)."""
    pick = rng.random()
    if pick < 0.15:
        return rng.choice(bounds)
    if pick < 0.2:
        return bounds[-1] * 1.5
    return rng.uniform(0.0, bounds[min(len(bounds) - 1, rng.randrange(12))])


def random_stats(rng: random.Random) -> tuple[Any, Any]:
    """One vLLM ``record()`` call's stats; sometimes only one half of the pair."""
    sched = it = None
    if rng.random() < 0.9:
        ext = None
        if rng.random() < 0.5:
            q = rng.randrange(0, 600)
            ext = SimpleNamespace(queries=q, hits=rng.randrange(0, q + 1))
        q = rng.randrange(0, 2000)
        sched = SimpleNamespace(
            num_running_reqs=rng.randrange(0, 32),
            num_waiting_reqs=rng.randrange(0, 20),
            num_skipped_waiting_reqs=rng.randrange(0, 3),
            kv_cache_usage=rng.random(),
            prefix_cache_stats=SimpleNamespace(queries=q, hits=rng.randrange(0, q + 1)),
            connector_prefix_cache_stats=ext,
        )
    if rng.random() < 0.85:
        computed, cached, external = (rng.randrange(0, 900) for _ in range(3))
        it = SimpleNamespace(
            prompt_token_stats=SimpleNamespace(
                total=computed + cached + external,
                computed=computed,
                local_cache_hit=cached,
                external_kv_transfer=external,
            ),
            num_generation_tokens=rng.randrange(0, 64),
            num_preempted_reqs=1 if rng.random() < 0.1 else 0,
            finished_requests=[
                SimpleNamespace(finish_reason=rng.choice(("stop", "length", "abort")))
                for _ in range(rng.randrange(0, 3))
            ],
            time_to_first_tokens_iter=[
                _latency(rng, TTFT_BUCKETS) for _ in range(rng.randrange(0, 4))
            ],
            inter_token_latencies_iter=[
                _latency(rng, ITL_BUCKETS) for _ in range(rng.randrange(0, 40))
            ],
        )
    return sched, it
