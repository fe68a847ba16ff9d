"""vLLM's per-step stats → running totals → a ``Reading`` (pure, thread-safe, no vLLM import).

``step_from_stats`` reads a ``SchedulerStats``/``IterationStats`` pair by attribute
(so fakes work in tests) into a ``StepSample`` of plain numbers. The engine thread
calls ``StatsAccumulator.observe`` with it: O(samples) additions under a lock, the
same increments vLLM's own Prometheus logger makes (``PrometheusStatLogger.record``).
The publisher thread calls ``reading()``, which hands the totals, as vLLM's /metrics
page would show them, to the one derivation (``workers.telemetry.derive``) that the
scraping agent uses too. Nothing here computes a rate or a quantile.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workers.telemetry import reading as r
from workers.telemetry.reading import ITL_BOUNDS_S, TTFT_BOUNDS_S, Reading


@dataclass(frozen=True, slots=True)
class StepSample:
    """What one ``record()`` call contributes, in plain numbers (increments, except
    the gauges)."""

    running: int | None = None
    """Scheduler gauges; ``None`` when the call carried no scheduler stats."""
    waiting: int | None = None
    waiting_deferred: int | None = None
    kv_usage: float | None = None
    prompt_tokens: int = 0
    prompt_tokens_computed: int = 0
    prompt_tokens_local_cache: int = 0
    prompt_tokens_external: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    finished: int = 0
    ttfts_s: Sequence[float] = ()
    itls_s: Sequence[float] = ()
    prefix_queries: int = 0
    prefix_hits: int = 0
    external_prefix_queries: int = 0
    external_prefix_hits: int = 0


def step_from_stats(scheduler_stats: Any, iteration_stats: Any) -> StepSample:
    """Read vLLM 0.32 ``SchedulerStats``/``IterationStats`` (either may be ``None``)."""
    kw: dict[str, Any] = {}
    if scheduler_stats is not None:
        kw["running"] = int(scheduler_stats.num_running_reqs)
        deferred = int(getattr(scheduler_stats, "num_skipped_waiting_reqs", 0))
        kw["waiting"] = int(scheduler_stats.num_waiting_reqs) + deferred
        kw["waiting_deferred"] = deferred
        kw["kv_usage"] = float(scheduler_stats.kv_cache_usage)
        pcs = getattr(scheduler_stats, "prefix_cache_stats", None)
        if pcs is not None:
            kw["prefix_queries"] = int(pcs.queries)
            kw["prefix_hits"] = int(pcs.hits)
        ext = getattr(scheduler_stats, "connector_prefix_cache_stats", None)
        if ext is not None:
            kw["external_prefix_queries"] = int(ext.queries)
            kw["external_prefix_hits"] = int(ext.hits)
    if iteration_stats is not None:
        pts = iteration_stats.prompt_token_stats
        kw["prompt_tokens"] = int(pts.total)
        kw["prompt_tokens_computed"] = int(pts.computed)
        kw["prompt_tokens_local_cache"] = int(pts.local_cache_hit)
        kw["prompt_tokens_external"] = int(pts.external_kv_transfer)
        kw["generation_tokens"] = int(iteration_stats.num_generation_tokens)
        kw["preemptions"] = int(iteration_stats.num_preempted_reqs)
        kw["finished"] = len(iteration_stats.finished_requests)
        kw["ttfts_s"] = tuple(iteration_stats.time_to_first_tokens_iter)
        kw["itls_s"] = tuple(iteration_stats.inter_token_latencies_iter)
    return StepSample(**kw)


class _Histogram:
    """Per-bucket counts (not cumulative) over fixed bounds plus ``+Inf``, like
    prometheus_client's: an observation lands in the first bucket with ``v <= le``
    (a NaN in none)."""

    def __init__(self, bounds_s: Sequence[float]) -> None:
        self.bounds = tuple(sorted(float(b) for b in bounds_s if not math.isinf(b)))
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, values: Sequence[float]) -> None:
        for v in values:
            if v == v:  # not NaN
                self.counts[bisect.bisect_left(self.bounds, v)] += 1

    def cumulative(self) -> tuple[tuple[float, float], ...]:
        les = (*self.bounds, math.inf)
        return tuple(zip(les, map(float, itertools.accumulate(self.counts)), strict=True))


class StatsAccumulator:
    """Folds ``StepSample``s into what vLLM's /metrics page would hold: last gauges,
    cumulative counters and cumulative TTFT/ITL buckets (``*_bounds_s``: the page's
    bucket bounds, so the plugin's quantiles equal the agent's)."""

    def __init__(
        self,
        *,
        ttft_bounds_s: Sequence[float] = TTFT_BOUNDS_S,
        itl_bounds_s: Sequence[float] = ITL_BOUNDS_S,
        kv_capacity_tokens: int | None = None,
    ) -> None:
        self.kv_capacity_tokens = kv_capacity_tokens
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(r.COUNTER_KEYS, 0)
        self._ttft = _Histogram(ttft_bounds_s)
        self._itl = _Histogram(itl_bounds_s)
        # vLLM's gauges read 0 until the first scheduler stats arrive; so do these
        self._running = 0
        self._waiting = 0
        self._deferred = 0
        self._kv_usage = 0.0
        self.records_total = 0
        """``observe`` calls so far."""

    def observe(self, s: StepSample) -> None:
        """Engine thread: add one step's increments (cheap; never blocks on I/O)."""
        with self._lock:
            self.records_total += 1
            if s.running is not None:
                self._running = s.running
            if s.waiting is not None:
                self._waiting = s.waiting
            if s.waiting_deferred is not None:
                self._deferred = s.waiting_deferred
            if s.kv_usage is not None:
                self._kv_usage = s.kv_usage
            c = self._counters
            c[r.PROMPT_TOKENS] += s.prompt_tokens
            c[r.GENERATION_TOKENS] += s.generation_tokens
            c[r.PREEMPTIONS] += s.preemptions
            c[r.PREFIX_QUERIES] += s.prefix_queries
            c[r.PREFIX_HITS] += s.prefix_hits
            c[r.EXTERNAL_PREFIX_QUERIES] += s.external_prefix_queries
            c[r.EXTERNAL_PREFIX_HITS] += s.external_prefix_hits
            c[r.REQUESTS_FINISHED] += s.finished
            c[r.PROMPT_TOKENS_COMPUTED] += s.prompt_tokens_computed
            c[r.PROMPT_TOKENS_LOCAL_CACHE] += s.prompt_tokens_local_cache
            c[r.PROMPT_TOKENS_EXTERNAL] += s.prompt_tokens_external
            self._ttft.observe(s.ttfts_s)
            self._itl.observe(s.itls_s)

    def reading(self) -> Reading:
        """Publisher thread: the totals as they stand (a consistent copy)."""
        with self._lock:
            counters = {k: float(v) for k, v in self._counters.items()}
            histograms = {r.TTFT: self._ttft.cumulative(), r.ITL: self._itl.cumulative()}
            gauges = (self._kv_usage, self._running, self._waiting, self._deferred)
        kv_usage, running, waiting, deferred = gauges
        return Reading(
            kv_usage=kv_usage,
            running=float(running),
            waiting=float(waiting),
            waiting_deferred=float(deferred),
            counters=counters,
            histograms=histograms,
            kv_capacity_tokens=self.kv_capacity_tokens,
            engines=1,
        )
