"""Traffic seen in the requests stream: per-tenant request shape and recent outcomes,
and per-interval totals for the planner's load predictors.

Records are timed by when the controller first sees them (``now_s`` of the tick),
not by their ``arrival_ms``: that needs no clock agreement between gateway and
controller, and in steady state completions per second equal arrivals per second.
Rejected requests count as offered load, so throttling never hides demand from
the planner.

Under overload completions stop equalling arrivals: admitted requests pile up in
the workers' queues and write their records only when they finish, so a rate
built from records alone sees the cluster's capacity, not the demand, and the
planner adds workers one capacity step at a time. Conservation fixes it:
arrivals over an interval = records seen + growth of the requests on the workers
(running + waiting, from telemetry, ``observe_in_system``). The growth telescopes
over intervals, so telemetry noise cannot accumulate into a trend.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from controlplane.schemas import RequestRecord


@dataclass(frozen=True, slots=True)
class Shape:
    """A typical request: what the latency predictions are made for."""

    prompt_tokens: float = 512.0
    output_tokens: float = 128.0
    cached_ratio: float = 0.0

    @property
    def uncached_tokens(self) -> float:
        return self.prompt_tokens * (1.0 - self.cached_ratio)


@dataclass(frozen=True, slots=True)
class Outcome:
    seen_s: float
    ttft_ms: float | None
    tpot_ms: float | None
    ok: bool
    rejected: bool = False
    """Turned away at admission: a TTFT miss, never an ITL one (it decoded nothing)."""


@dataclass(frozen=True, slots=True)
class IntervalTotals:
    """Offered load over one planner interval."""

    duration_s: float
    requests: int
    """Records seen: finished, failed and rejected requests."""
    ok_requests: int
    prompt_tokens: float
    output_tokens: float
    cached_tokens: float
    in_system_delta: int = 0
    """Growth of the requests on the workers over the interval (0 without telemetry)."""

    @property
    def arrivals(self) -> int:
        """Requests that arrived: seen finished/rejected + the growth of those still in."""
        return max(0, self.requests + self.in_system_delta)

    @property
    def rate_rps(self) -> float:
        return self.arrivals / self.duration_s if self.duration_s > 0 else 0.0


ALL = ""
"""Key of the all-tenant shape."""


class _Ewma:
    __slots__ = ("alpha", "value")

    def __init__(self, alpha: float, value: float) -> None:
        self.alpha, self.value = alpha, value

    def add(self, v: float) -> None:
        self.value += self.alpha * (v - self.value)


class TrafficWindow:
    """Rolling per-tenant state plus an interval accumulator."""

    def __init__(
        self, window_s: float = 60.0, shape_alpha: float = 0.05, default: Shape = Shape()
    ) -> None:
        self.window_s = window_s
        self.default = default
        self._alpha = shape_alpha
        self._shape: dict[str, tuple[_Ewma, _Ewma, _Ewma]] = {}
        self.outcomes: dict[str, deque[Outcome]] = {}
        self._arrivals: dict[str, deque[float]] = {}
        self._admitted: deque[float] = deque()
        self._admitted_by: dict[str, deque[float]] = {}
        self._acc = [0, 0, 0.0, 0.0, 0.0]
        self._in_system: int | None = None
        self._in_system_at_take: int | None = None

    def observe_in_system(self, requests: int) -> None:
        """Requests on the workers now (running + waiting over the fresh snapshots)."""
        self._in_system = requests

    def observe(self, records: Iterable[RequestRecord], now_s: float) -> None:
        for r in records:
            self._acc[0] += 1
            self._arrivals.setdefault(r.tenant, deque()).append(now_s)
            if r.outcome != "rejected":
                self._admitted.append(now_s)
                self._admitted_by.setdefault(r.tenant, deque()).append(now_s)
            if r.outcome != "ok":
                self.outcomes.setdefault(r.tenant, deque()).append(
                    Outcome(now_s, None, None, False, rejected=r.outcome == "rejected")
                )
                continue
            self._acc[1] += 1
            self._acc[2] += r.prompt_tokens
            self._acc[3] += r.output_tokens
            self._acc[4] += r.cached_tokens
            cached = r.cached_tokens / r.prompt_tokens if r.prompt_tokens > 0 else 0.0
            for key in (r.tenant, ALL):
                ew = self._shape.get(key)
                if ew is None:
                    a = self._alpha
                    ew = (_Ewma(a, r.prompt_tokens), _Ewma(a, r.output_tokens), _Ewma(a, cached))
                    self._shape[key] = ew
                else:
                    ew[0].add(r.prompt_tokens)
                    ew[1].add(r.output_tokens)
                    ew[2].add(cached)
            self.outcomes.setdefault(r.tenant, deque()).append(
                Outcome(now_s, r.ttft_ms, r.tpot_ms, True)
            )
        self._expire(now_s)

    def _expire(self, now_s: float) -> None:
        cutoff = now_s - self.window_s
        for o in self.outcomes.values():
            while o and o[0].seen_s < cutoff:
                o.popleft()
        for a in (*self._arrivals.values(), *self._admitted_by.values(), self._admitted):
            while a and a[0] < cutoff:
                a.popleft()

    def shape(self, tenant: str = "") -> Shape:
        """EWMA shape of ``tenant``'s requests; ``""`` = all tenants together (also the
        fallback for a tenant not seen yet)."""
        ew = self._shape.get(tenant) or self._shape.get(ALL)
        if ew is None:
            return self.default
        return Shape(max(1.0, ew[0].value), max(1.0, ew[1].value), min(1.0, max(0.0, ew[2].value)))

    def rate_rps(self, tenant: str, now_s: float, span_s: float = 30.0) -> float:
        """Requests per second seen over the last ``span_s`` (bounded by the window)."""
        span_s = min(span_s, self.window_s)
        d = self._arrivals.get(tenant, ())
        return sum(1 for t in d if t >= now_s - span_s) / span_s

    def active_tenants(self) -> list[str]:
        return sorted(t for t, d in self._arrivals.items() if d)

    def take_interval(self, duration_s: float) -> IntervalTotals:
        """Totals since the last call (the planner calls this once per interval)."""
        n, ok, p, o, c = self._acc
        self._acc = [0, 0, 0.0, 0.0, 0.0]
        delta = 0
        if self._in_system is not None:
            if self._in_system_at_take is not None:
                delta = self._in_system - self._in_system_at_take
            self._in_system_at_take = self._in_system
        return IntervalTotals(duration_s, int(n), int(ok), p, o, c, delta)

    def total_rate_rps(self, now_s: float, span_s: float = 30.0) -> float:
        """Offered load: every request, admitted or not (what capacity must serve)."""
        return sum(self.rate_rps(t, now_s, span_s) for t in self._arrivals)

    def admitted_rate_rps(self, now_s: float, span_s: float = 10.0) -> float:
        """Requests that reached a worker: the load that queues, so what predicted
        latency depends on. Throttled requests drop out of it at once."""
        span_s = min(span_s, self.window_s)
        return sum(1 for t in self._admitted if t >= now_s - span_s) / span_s

    def admitted_rate_rps_of(
        self, tenants: Iterable[str], now_s: float, span_s: float = 10.0
    ) -> float:
        """``admitted_rate_rps`` over a subset of tenants (e.g. one priority and above)."""
        span_s = min(span_s, self.window_s)
        cutoff = now_s - span_s
        n = sum(1 for t in tenants for a in self._admitted_by.get(t, ()) if a >= cutoff)
        return n / span_s

    def admitted_share(self, now_s: float, span_s: float = 10.0) -> float:
        offered = self.total_rate_rps(now_s, span_s)
        return min(1.0, self.admitted_rate_rps(now_s, span_s) / offered) if offered > 0 else 1.0
