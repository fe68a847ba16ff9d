"""Pure histogram helpers: bucket deltas, rolling windows and Prometheus-style quantiles.

Kept free of I/O, clocks and prometheus_client: ``workers.telemetry.derive`` uses them for
both the scraping agent and the in-process vLLM stat-logger plugin, so windowed TTFT/ITL
quantiles come from one arithmetic, the same as PromQL ``histogram_quantile``.

A histogram is a tuple of ``(upper_bound, cumulative_count)`` pairs sorted by
upper bound, ending with ``+Inf`` (the Prometheus ``le`` buckets as exposed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Buckets = tuple[tuple[float, float], ...]
"""``((le, cumulative_count), ...)`` sorted by ``le``; the last ``le`` is ``+Inf``."""

EMPTY: Buckets = ()


def normalize(pairs: Iterable[tuple[float, float]]) -> Buckets:
    """Sort by bound, merge duplicate bounds (several engines), force monotonic counts.

    Prometheus fixes non-monotonic buckets (float noise) the same way before
    interpolating, so this keeps our quantiles identical to PromQL's.
    """
    merged: dict[float, float] = {}
    for le, count in pairs:
        merged[le] = merged.get(le, 0.0) + count
    out: list[tuple[float, float]] = []
    running_max = 0.0
    for le in sorted(merged):
        running_max = max(running_max, merged[le])
        out.append((le, running_max))
    return tuple(out)


def total(buckets: Buckets) -> float:
    """Number of observations (the ``+Inf`` bucket)."""
    return buckets[-1][1] if buckets else 0.0


def quantile(q: float, buckets: Buckets) -> float | None:
    """``histogram_quantile(q, buckets)`` with PromQL semantics; None when empty.

    Linear interpolation inside the bucket holding rank ``q * total``; the lowest
    bucket interpolates from 0; a rank in the ``+Inf`` bucket returns the highest
    finite bound (we cannot know more).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    observations = buckets[-1][1]
    if observations <= 0:
        return None
    rank = q * observations
    idx = len(buckets) - 1
    for i in range(len(buckets) - 1):
        if buckets[i][1] >= rank:
            idx = i
            break
    if idx == len(buckets) - 1:
        return buckets[-2][0]
    upper, count = buckets[idx]
    if idx == 0 and upper <= 0:
        return upper
    lower = 0.0 if idx == 0 else buckets[idx - 1][0]
    prev_count = 0.0 if idx == 0 else buckets[idx - 1][1]
    in_bucket = count - prev_count
    if in_bucket <= 0:
        return lower
    return lower + (upper - lower) * ((rank - prev_count) / in_bucket)


def delta(current: Buckets, previous: Buckets | None) -> tuple[Buckets, bool]:
    """Observations between two scrapes, and whether a counter reset was detected.

    A reset (worker restart: a bucket or the total went down, or the bucket layout
    changed) means everything in ``current`` happened since the restart, so
    ``current`` itself is the delta.
    """
    if previous is None or not previous:
        return current, False
    if len(previous) != len(current) or any(
        p[0] != c[0] for p, c in zip(previous, current, strict=True)
    ):
        return current, True
    diffs = tuple((c[0], c[1] - p[1]) for p, c in zip(previous, current, strict=True))
    if any(d < 0 for _, d in diffs):
        return current, True
    return diffs, False


def add(a: Buckets, b: Buckets) -> Buckets:
    """Sum two histograms (bucket-wise; differing layouts are merged by bound)."""
    if not a:
        return b
    if not b:
        return a
    if len(a) == len(b) and all(x[0] == y[0] for x, y in zip(a, b, strict=True)):
        return tuple((x[0], x[1] + y[1]) for x, y in zip(a, b, strict=True))
    return _merge_layouts(a, b)


def _merge_layouts(a: Buckets, b: Buckets) -> Buckets:
    """Sum histograms with different bounds: each cumulative count is a step function."""
    bounds = sorted({le for le, _ in a} | {le for le, _ in b})
    return tuple((le, _cum_at(a, le) + _cum_at(b, le)) for le in bounds)


def _cum_at(h: Buckets, le: float) -> float:
    best = 0.0
    for bound, count in h:
        if bound <= le:
            best = count
        else:
            break
    return best


@dataclass(frozen=True, slots=True)
class WindowEntry:
    """The bucket delta observed by one scrape, stamped with its (monotonic) time."""

    at_s: float
    buckets: Buckets


Window = tuple[WindowEntry, ...]


def push(window: Window, at_s: float, buckets: Buckets, keep_s: float) -> Window:
    """Append a delta and drop entries older than ``keep_s`` (immutable; returns a new window)."""
    kept = tuple(e for e in window if at_s - e.at_s <= keep_s)
    if total(buckets) > 0:
        kept = (*kept, WindowEntry(at_s, buckets))
    return kept


def windowed(window: Window, now_s: float, keep_s: float, min_observations: float = 1.0) -> Buckets:
    """Merge the newest deltas until ``min_observations`` are covered or ``keep_s`` is spanned.

    With ``min_observations=1`` this is "the last scrape's delta if it saw anything,
    else the most recent deltas of the last ``keep_s`` seconds", so quantiles track
    the current state yet do not flap to None between sparse finishes.
    """
    acc: Buckets = EMPTY
    for entry in reversed(window):
        if now_s - entry.at_s > keep_s:
            break
        acc = add(acc, entry.buckets)
        if total(acc) >= min_observations:
            break
    return acc


def quantiles_ms(
    buckets: Buckets, qs: Sequence[float] = (0.5, 0.9, 0.99)
) -> tuple[float | None, ...]:
    """Quantiles of a seconds-histogram, in milliseconds (None when empty)."""
    out: list[float | None] = []
    for q in qs:
        v = quantile(q, buckets)
        out.append(None if v is None else v * 1000.0)
    return tuple(out)
