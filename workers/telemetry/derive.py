"""The one snapshot derivation: previous state + a fresh ``Reading`` + time → WorkerSnapshot.

Pure: no I/O and no clock. The caller passes the wall time (``ts_ms``) and a monotonic
time (``mono_s``, for rates and window ageing). The scraping agent (``workers.agent``)
and the in-process vLLM plugin (``workers.vllm_plugin``) both call ``derive``; they
differ only in how they produce the ``Reading`` (a parsed /metrics page, or vLLM's
per-step stats folded into running totals), so the same counters give the same snapshot.

What is derived and how:

* ``kv_usage``, ``running``, ``waiting``: the gauges as read (0 when absent).
* ``waiting_tokens``: always ``None``. vLLM 0.32 has no gauge (nor in-process stat) of
  queued prompt tokens; the prompt-token counters only move once a request is scheduled.
* TTFT/ITL p50/p90/p99 (ms): PromQL ``histogram_quantile`` interpolation on the bucket
  *deltas* since the previous reading; when that interval saw no new observation, on the
  merged deltas of the last ``window_s`` seconds; else ``None``. With no previous reading
  (first or single one) the cumulative histogram is used.
* tokens/s and preemptions/s: counter deltas over the monotonic time between readings
  (0 on the first).
* ``prefix_hit_rate`` (and ``extra.external_prefix_hit_rate`` for the KV connector's
  cache): hits/queries over the last interval, falling back to the cumulative ratio when
  there were no queries in it; ``None`` (absent) without queries.
* Counter resets (worker restart: a counter or bucket went down, or the process start
  time changed): the current value is the delta since the restart.
* NaN/Inf values in the reading are treated as missing (``finite_reading``): a gauge is
  then 0 as when absent, a counter or histogram is left out of this step, so neither a
  crash (``round(nan)``) nor a NaN reaches the snapshot.
* ``extra``: ``ttft_window_count``/``itl_window_count`` (observations behind the
  quantiles), ``counter_reset`` (1 on a detected restart), the cumulative
  ``preemptions_total`` and ``prompt_tokens_{computed,local_cache,external}_total`` and
  the ``waiting_deferred`` gauge when the reading has them; ``last_ok_ts_ms`` on down
  snapshots (``mark_down``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from controlplane.schemas import WorkerSnapshot
from workers.telemetry import histogram
from workers.telemetry import reading as r
from workers.telemetry.histogram import Buckets, Window
from workers.telemetry.reading import Reading

QUANTILES = (0.5, 0.9, 0.99)

_EXTRA_TOTALS = (
    (r.PREEMPTIONS, "preemptions_total"),
    (r.PROMPT_TOKENS_COMPUTED, "prompt_tokens_computed_total"),
    (r.PROMPT_TOKENS_LOCAL_CACHE, "prompt_tokens_local_cache_total"),
    (r.PROMPT_TOKENS_EXTERNAL, "prompt_tokens_external_total"),
)
"""Cumulative counters copied into ``extra`` as ``<name>``, when the reading has them."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the snapshots are about; ``model=None`` means "take it from the reading"."""

    cluster: str
    worker: str
    role: str
    model: str | None = None
    url: str = ""
    source: str = "agent"
    """``WorkerSnapshot.source``: ``agent`` (scraped) or ``plugin`` (in-process)."""


@dataclass(frozen=True, slots=True)
class DeriveConfig:
    window_s: float = 5.0
    """How far back quantiles may reach when the last interval saw no observation."""
    min_observations: float = 1.0
    """Widen the quantile window (up to ``window_s``) until it holds this many observations."""


@dataclass(frozen=True, slots=True)
class DeriveState:
    """Everything derive needs from earlier readings; immutable, replaced each step."""

    reading: Reading | None = None
    at_s: float | None = None
    windows: dict[str, Window] = field(default_factory=dict)
    snapshot: WorkerSnapshot | None = None
    seq: int = 0
    last_ok_ms: int = 0
    resets: int = 0


def _finite(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


def _finite_histogram(h: Buckets) -> bool:
    return all(not math.isnan(le) and math.isfinite(n) for le, n in h)


def finite_reading(reading: Reading) -> tuple[Reading, int]:
    """The reading with every NaN/Inf value removed (gauges → None, counters and
    histograms left out), and how many values that was."""
    gauges = (reading.kv_usage, reading.running, reading.waiting,
              reading.waiting_deferred, reading.start_time_s)  # fmt: skip
    bad = sum(1 for g in gauges if g is not None and not math.isfinite(g))
    bad_counters = [k for k, v in reading.counters.items() if not math.isfinite(v)]
    bad_histograms = [k for k, h in reading.histograms.items() if not _finite_histogram(h)]
    bad += len(bad_counters) + len(bad_histograms)
    if not bad:
        return reading, 0
    return replace(
        reading,
        kv_usage=_finite(reading.kv_usage),
        running=_finite(reading.running),
        waiting=_finite(reading.waiting),
        waiting_deferred=_finite(reading.waiting_deferred),
        start_time_s=_finite(reading.start_time_s),
        counters={k: v for k, v in reading.counters.items() if k not in bad_counters},
        histograms={k: h for k, h in reading.histograms.items() if k not in bad_histograms},
    ), bad


def _restarted(prev: Reading, cur: Reading) -> bool:
    return (
        prev.start_time_s is not None
        and cur.start_time_s is not None
        and cur.start_time_s != prev.start_time_s
    )


def counter_delta(cur: float, prev: float | None, reset: bool) -> tuple[float, bool]:
    """Increase of a counter; a decrease means the worker restarted (delta = current)."""
    if prev is None:
        return 0.0, False
    if reset or cur < prev:
        return cur, True
    return cur - prev, False


def _rate(delta: float, dt_s: float | None) -> float:
    return delta / dt_s if dt_s and dt_s > 0 else 0.0


def _hit_rate(
    hits: str, queries: str, deltas: Mapping[str, float], totals: Mapping[str, float]
) -> float | None:
    """hits/queries over the interval, else over the worker's life, else None."""
    if deltas.get(queries, 0.0) > 0:
        return deltas.get(hits, 0.0) / deltas[queries]
    if totals.get(queries, 0.0) > 0:
        return totals.get(hits, 0.0) / totals[queries]
    return None


def derive(
    state: DeriveState,
    reading: Reading,
    *,
    ident: Identity,
    ts_ms: int,
    mono_s: float,
    config: DeriveConfig = DeriveConfig(),
) -> tuple[WorkerSnapshot, DeriveState]:
    """One telemetry step. Returns the snapshot to publish and the state for the next step."""
    reading, _ = finite_reading(reading)
    prev = state.reading
    restart = prev is not None and _restarted(prev, reading)
    dt_s = None if state.at_s is None else mono_s - state.at_s
    any_reset = restart

    deltas: dict[str, float] = {}
    for key, cur in reading.counters.items():
        before = None if prev is None else prev.counters.get(key)
        d, was_reset = counter_delta(cur, before, restart)
        deltas[key] = d
        any_reset = any_reset or was_reset

    windows = dict(state.windows)
    window_buckets: dict[str, Buckets] = {}
    carried: dict[str, Buckets] = {}
    for key in (r.TTFT, r.ITL):
        if prev is not None and not restart and key not in reading.histograms:
            if key in prev.histograms:  # missing this once (e.g. a NaN bucket): the next
                carried[key] = prev.histograms[key]  # delta is taken from the last good one
            windows[key] = histogram.push(windows.get(key, ()), mono_s, (), config.window_s)
            window_buckets[key] = histogram.windowed(
                windows[key], mono_s, config.window_s, config.min_observations
            )
            continue
        cur_h = reading.histograms.get(key, histogram.EMPTY)
        if prev is None:
            window_buckets[key] = cur_h  # single reading: lifetime quantiles
            continue
        prev_h = None if restart else prev.histograms.get(key)
        d_h, was_reset = histogram.delta(cur_h, prev_h)
        any_reset = any_reset or was_reset
        windows[key] = histogram.push(windows.get(key, ()), mono_s, d_h, config.window_s)
        window_buckets[key] = histogram.windowed(
            windows[key], mono_s, config.window_s, config.min_observations
        )

    ttft = histogram.quantiles_ms(window_buckets[r.TTFT], QUANTILES)
    itl = histogram.quantiles_ms(window_buckets[r.ITL], QUANTILES)
    c = reading.counters
    extra: dict[str, float] = {
        "ttft_window_count": histogram.total(window_buckets[r.TTFT]),
        "itl_window_count": histogram.total(window_buckets[r.ITL]),
        "counter_reset": 1.0 if any_reset else 0.0,
    }
    for key, name in _EXTRA_TOTALS:
        if key in c:
            extra[name] = c[key]
    if reading.waiting_deferred is not None:
        extra["waiting_deferred"] = float(reading.waiting_deferred)
    ext_rate = _hit_rate(r.EXTERNAL_PREFIX_HITS, r.EXTERNAL_PREFIX_QUERIES, deltas, c)
    if ext_rate is not None:
        extra["external_prefix_hit_rate"] = ext_rate

    seq = state.seq + 1
    snap = WorkerSnapshot(
        cluster=ident.cluster,
        worker=ident.worker,
        role=ident.role,
        model=ident.model or reading.model or "unknown",
        url=ident.url,
        up=True,
        kv_usage=reading.kv_usage or 0.0,
        running=round(reading.running or 0.0),
        waiting=round(reading.waiting or 0.0),
        waiting_tokens=None,
        ttft_p50_ms=ttft[0],
        ttft_p90_ms=ttft[1],
        ttft_p99_ms=ttft[2],
        itl_p50_ms=itl[0],
        itl_p90_ms=itl[1],
        itl_p99_ms=itl[2],
        prompt_tokens_per_s=_rate(deltas.get(r.PROMPT_TOKENS, 0.0), dt_s),
        gen_tokens_per_s=_rate(deltas.get(r.GENERATION_TOKENS, 0.0), dt_s),
        preemptions_per_s=_rate(deltas.get(r.PREEMPTIONS, 0.0), dt_s),
        prefix_hit_rate=_hit_rate(r.PREFIX_HITS, r.PREFIX_QUERIES, deltas, c),
        kv_capacity_tokens=reading.kv_capacity_tokens,
        requests_finished_total=c.get(r.REQUESTS_FINISHED, 0.0),
        prompt_tokens_total=c.get(r.PROMPT_TOKENS, 0.0),
        generation_tokens_total=c.get(r.GENERATION_TOKENS, 0.0),
        source=ident.source,
        ts_ms=ts_ms,
        seq=seq,
        extra=extra,
    )
    if carried:
        reading = replace(reading, histograms={**reading.histograms, **carried})
    new_state = DeriveState(
        reading=reading,
        at_s=mono_s,
        windows=windows,
        snapshot=snap,
        seq=seq,
        last_ok_ms=ts_ms,
        resets=state.resets + (1 if any_reset else 0),
    )
    return snap, new_state


def mark_down(
    state: DeriveState, *, ident: Identity, ts_ms: int
) -> tuple[WorkerSnapshot, DeriveState]:
    """The worker did not answer (or answered garbage, or is shutting down): publish it as
    down, keeping the last values so readers see what it was doing, and keep heartbeating
    so it is never silently dropped. ``extra.last_ok_ts_ms`` tells how old the values are."""
    seq = state.seq + 1
    extra = {"last_ok_ts_ms": float(state.last_ok_ms)}
    if state.snapshot is None:
        snap = WorkerSnapshot(
            cluster=ident.cluster,
            worker=ident.worker,
            role=ident.role,
            model=ident.model or "unknown",
            url=ident.url,
            up=False,
            source=ident.source,
            ts_ms=ts_ms,
            seq=seq,
            extra=extra,
        )
    else:
        snap = replace(
            state.snapshot, up=False, ts_ms=ts_ms, seq=seq, extra={**state.snapshot.extra, **extra}
        )
    return snap, replace(state, snapshot=snap, seq=seq)
