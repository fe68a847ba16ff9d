"""Turn vLLM's per-step stats into ``WorkerSnapshot``s (pure, thread-safe, no vLLM import).

``step_from_stats`` reads a ``SchedulerStats``/``IterationStats`` pair by attribute
(so fakes work in tests) into a ``StepSample`` of plain numbers. The engine thread
calls ``TelemetryAccumulator.observe`` with it (O(samples), under a lock); the
publisher thread calls ``snapshot`` which does the sorting and rate maths.

Quantiles are exact (vLLM hands us every TTFT and inter-token gap) over a rolling
``window_s``; ``None`` when the window holds no sample.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.schemas import WorkerSnapshot

MAX_SAMPLES = 8192
"""Cap per latency series, so a burst cannot make ``snapshot`` slow."""


@dataclass(frozen=True, slots=True)
class StepSample:
    """What one ``record()`` call contributes, in plain numbers."""

    at_s: float
    """Monotonic time of the call."""
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


def step_from_stats(scheduler_stats: Any, iteration_stats: Any, at_s: float) -> StepSample:
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
    return StepSample(at_s=at_s, **kw)


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending, non-empty sequence."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] * (1.0 - frac) + sorted_values[hi] * frac


def _quantiles_ms(values: Iterable[float]) -> tuple[float | None, float | None, float | None]:
    s = sorted(values)
    if not s:
        return None, None, None
    return quantile(s, 0.5) * 1e3, quantile(s, 0.9) * 1e3, quantile(s, 0.99) * 1e3


@dataclass(frozen=True, slots=True)
class Identity:
    cluster: str
    worker: str
    role: str
    model: str
    url: str = ""


@dataclass(slots=True)
class _Totals:
    prompt: float = 0.0
    generation: float = 0.0
    preemptions: float = 0.0
    finished: float = 0.0
    prompt_computed: float = 0.0
    prompt_local_cache: float = 0.0
    prompt_external: float = 0.0


@dataclass(slots=True)
class _State:
    running: int = 0
    waiting: int = 0
    waiting_deferred: int = 0
    kv_usage: float = 0.0
    totals: _Totals = field(default_factory=_Totals)
    ttfts: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    itls: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    prefix: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=4096))
    ext_prefix: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=4096))
    records: int = 0
    last_step_s: float | None = None


class TelemetryAccumulator:
    """Folds ``StepSample``s into running state; builds snapshots on demand."""

    def __init__(
        self,
        identity: Identity,
        *,
        window_s: float = 5.0,
        rate_window_s: float = 1.0,
        kv_capacity_tokens: int | None = None,
    ) -> None:
        self.identity = identity
        self.window_s = window_s
        self.rate_window_s = rate_window_s
        self.kv_capacity_tokens = kv_capacity_tokens
        self._lock = threading.Lock()
        self._st = _State()
        self._history: deque[tuple[float, _Totals]] = deque()
        self._seq = 0
        self._dirty = False

    @property
    def dirty(self) -> bool:
        """True when a step was observed since the last snapshot."""
        return self._dirty

    def observe(self, s: StepSample) -> None:
        with self._lock:
            st = self._st
            st.records += 1
            st.last_step_s = s.at_s
            if s.running is not None:
                st.running = s.running
            if s.waiting is not None:
                st.waiting = s.waiting
            if s.waiting_deferred is not None:
                st.waiting_deferred = s.waiting_deferred
            if s.kv_usage is not None:
                st.kv_usage = s.kv_usage
            t = st.totals
            t.prompt += s.prompt_tokens
            t.generation += s.generation_tokens
            t.preemptions += s.preemptions
            t.finished += s.finished
            t.prompt_computed += s.prompt_tokens_computed
            t.prompt_local_cache += s.prompt_tokens_local_cache
            t.prompt_external += s.prompt_tokens_external
            st.ttfts.extend((s.at_s, v) for v in s.ttfts_s)
            st.itls.extend((s.at_s, v) for v in s.itls_s)
            if s.prefix_queries:
                st.prefix.append((s.at_s, s.prefix_queries, s.prefix_hits))
            if s.external_prefix_queries:
                st.ext_prefix.append((s.at_s, s.external_prefix_queries, s.external_prefix_hits))
            self._dirty = True

    def snapshot(
        self,
        now_s: float,
        wall_ms: int,
        *,
        up: bool = True,
        extra: dict[str, float] | None = None,
    ) -> WorkerSnapshot:
        """The current snapshot; ``now_s`` is monotonic (same clock as ``StepSample.at_s``)."""
        cutoff = now_s - self.window_s
        with self._lock:
            st = self._st
            for dq in (st.ttfts, st.itls, st.prefix, st.ext_prefix):
                while dq and dq[0][0] < cutoff:
                    dq.popleft()
            ttfts = [v for _, v in st.ttfts]
            itls = [v for _, v in st.itls]
            pq = sum(q for _, q, _ in st.prefix)
            ph = sum(h for _, _, h in st.prefix)
            eq = sum(q for _, q, _ in st.ext_prefix)
            eh = sum(h for _, _, h in st.ext_prefix)
            totals = replace(st.totals)
            running, waiting, kv_usage = st.running, st.waiting, st.kv_usage
            deferred, records = st.waiting_deferred, st.records
            self._seq += 1
            seq = self._seq
            self._dirty = False
        ttft = _quantiles_ms(ttfts)
        itl = _quantiles_ms(itls)
        rates = self._rates(now_s, totals)
        ex: dict[str, float] = {
            "prompt_tokens_computed_total": totals.prompt_computed,
            "prompt_tokens_local_cache_total": totals.prompt_local_cache,
            "prompt_tokens_external_total": totals.prompt_external,
            "preemptions_total": totals.preemptions,
            "waiting_deferred": float(deferred),
            "records_total": float(records),
        }
        if eq:
            ex["external_prefix_hit_rate"] = eh / eq
        ex.update(extra or {})
        ident = self.identity
        return WorkerSnapshot(
            cluster=ident.cluster,
            worker=ident.worker,
            role=ident.role,
            model=ident.model,
            url=ident.url,
            up=up,
            kv_usage=kv_usage,
            running=running,
            waiting=waiting,
            ttft_p50_ms=ttft[0],
            ttft_p90_ms=ttft[1],
            ttft_p99_ms=ttft[2],
            itl_p50_ms=itl[0],
            itl_p90_ms=itl[1],
            itl_p99_ms=itl[2],
            prompt_tokens_per_s=rates[0],
            gen_tokens_per_s=rates[1],
            preemptions_per_s=rates[2],
            prefix_hit_rate=(ph / pq) if pq else None,
            kv_capacity_tokens=self.kv_capacity_tokens,
            requests_finished_total=totals.finished,
            prompt_tokens_total=totals.prompt,
            generation_tokens_total=totals.generation,
            source="plugin",
            ts_ms=wall_ms,
            seq=seq,
            extra=ex,
        )

    def _rates(self, now_s: float, totals: _Totals) -> tuple[float, float, float]:
        """Per-second rates over the last ``rate_window_s`` (publisher thread only)."""
        h = self._history
        h.append((now_s, totals))
        while len(h) > 2 and h[1][0] <= now_s - self.rate_window_s:
            h.popleft()
        t0, first = h[0]
        dt = now_s - t0
        if dt <= 0:
            return 0.0, 0.0, 0.0
        return (
            (totals.prompt - first.prompt) / dt,
            (totals.generation - first.generation) / dt,
            (totals.preemptions - first.preemptions) / dt,
        )
