"""Pure derivation: previous state + a freshly parsed page + time → WorkerSnapshot.

No I/O and no clock: the caller passes the wall time (for ``ts_ms``) and a
monotonic time (for rates and window ageing), so the same function serves the
live agent, offline ``--from-file`` inspection, tests and the vLLM plugin.

What is derived and how:

* ``kv_usage``, ``running``, ``waiting``: the gauges as read.
* ``waiting_tokens``: always ``None``. vLLM 0.32 exposes no gauge of queued prompt
  tokens (only ``num_requests_waiting``), and the prompt-token counters only move
  once a request is scheduled, so nothing on the page determines it.
* TTFT/ITL p50/p90/p99 (ms): PromQL-style interpolation on the bucket *deltas*
  of the last scrape; when that scrape saw no new observation, on the merged
  deltas of the last ``window_s`` seconds; else ``None``. With no previous page
  (first or single page) the cumulative histogram is used.
* tokens/s and preemptions/s: counter deltas over the monotonic time between pages.
* ``prefix_hit_rate``: hits/queries over the last interval, falling back to the
  cumulative ratio when there were no queries in it; ``None`` without queries.
* Counter resets (worker restart: a counter went down, or the process start
  time changed): the current value is the delta since the restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from controlplane.schemas import WorkerSnapshot
from workers.agent import histogram
from workers.agent.histogram import Buckets, Window
from workers.agent.parse import ParsedPage

QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the snapshots are about; ``model=None`` means "take it from the page"."""

    cluster: str
    worker: str
    role: str
    model: str | None = None
    url: str = ""
    source: str = "agent"


@dataclass(frozen=True, slots=True)
class DeriveConfig:
    window_s: float = 5.0
    """How far back quantiles may reach when the last scrape saw no observation."""
    min_observations: float = 1.0
    """Widen the quantile window (up to ``window_s``) until it holds this many observations."""


@dataclass(frozen=True, slots=True)
class DeriveState:
    """Everything derive needs from earlier samples; immutable, replaced each step."""

    page: ParsedPage | None = None
    at_s: float | None = None
    windows: dict[str, Window] = field(default_factory=dict)
    snapshot: WorkerSnapshot | None = None
    seq: int = 0
    last_ok_ms: int = 0
    resets: int = 0


def _restarted(prev: ParsedPage, cur: ParsedPage) -> bool:
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


def derive(
    state: DeriveState,
    page: ParsedPage,
    *,
    ident: Identity,
    ts_ms: int,
    mono_s: float,
    config: DeriveConfig = DeriveConfig(),
) -> tuple[WorkerSnapshot, DeriveState]:
    """One telemetry step. Returns the snapshot to publish and the state for the next step."""
    prev = state.page
    restart = prev is not None and _restarted(prev, page)
    dt_s = None if state.at_s is None else mono_s - state.at_s
    any_reset = restart

    deltas: dict[str, float] = {}
    for key, cur in page.counters.items():
        before = None if prev is None else prev.counters.get(key)
        d, was_reset = counter_delta(cur, before, restart)
        deltas[key] = d
        any_reset = any_reset or was_reset

    windows = dict(state.windows)
    window_buckets: dict[str, Buckets] = {}
    for key in ("ttft", "itl"):
        cur_h = page.histograms.get(key, histogram.EMPTY)
        if prev is None:
            window_buckets[key] = cur_h  # single page: lifetime quantiles
            continue
        prev_h = None if restart else prev.histograms.get(key)
        d_h, was_reset = histogram.delta(cur_h, prev_h)
        any_reset = any_reset or was_reset
        windows[key] = histogram.push(windows.get(key, ()), mono_s, d_h, config.window_s)
        window_buckets[key] = histogram.windowed(
            windows[key], mono_s, config.window_s, config.min_observations
        )

    ttft = histogram.quantiles_ms(window_buckets["ttft"], QUANTILES)
    itl = histogram.quantiles_ms(window_buckets["itl"], QUANTILES)
    c = page.counters
    hit_rate: float | None = None
    if deltas.get("prefix_queries", 0.0) > 0:
        hit_rate = deltas.get("prefix_hits", 0.0) / deltas["prefix_queries"]
    elif c.get("prefix_queries", 0.0) > 0:
        hit_rate = c.get("prefix_hits", 0.0) / c["prefix_queries"]

    seq = state.seq + 1
    snap = WorkerSnapshot(
        cluster=ident.cluster,
        worker=ident.worker,
        role=ident.role,
        model=ident.model or page.model or "unknown",
        url=ident.url,
        up=True,
        kv_usage=page.kv_usage or 0.0,
        running=round(page.running or 0.0),
        waiting=round(page.waiting or 0.0),
        waiting_tokens=None,
        ttft_p50_ms=ttft[0],
        ttft_p90_ms=ttft[1],
        ttft_p99_ms=ttft[2],
        itl_p50_ms=itl[0],
        itl_p90_ms=itl[1],
        itl_p99_ms=itl[2],
        prompt_tokens_per_s=_rate(deltas.get("prompt_tokens", 0.0), dt_s),
        gen_tokens_per_s=_rate(deltas.get("generation_tokens", 0.0), dt_s),
        preemptions_per_s=_rate(deltas.get("preemptions", 0.0), dt_s),
        prefix_hit_rate=hit_rate,
        kv_capacity_tokens=page.kv_capacity_tokens,
        requests_finished_total=c.get("requests_finished", 0.0),
        prompt_tokens_total=c.get("prompt_tokens", 0.0),
        generation_tokens_total=c.get("generation_tokens", 0.0),
        source=ident.source,
        ts_ms=ts_ms,
        seq=seq,
        extra={
            "ttft_window_count": histogram.total(window_buckets["ttft"]),
            "itl_window_count": histogram.total(window_buckets["itl"]),
            "counter_reset": 1.0 if any_reset else 0.0,
        },
    )
    new_state = DeriveState(
        page=page,
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
    """The worker did not answer (or answered garbage): publish it as down, keeping the
    last values so readers see what it was doing, and keep heartbeating so it is
    never silently dropped. ``extra.last_ok_ts_ms`` tells how old the values are."""
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
