"""Counters and histogram inputs the engine keeps, shaped like vLLM 0.32's /metrics.

The engine fills these as it runs (pure Python, no prometheus_client) so the
replay driver can read them cheaply and the sim server can render them as
``vllm:*`` families at scrape time. Histograms take weighted observations
because a fast-forwarded decode stretch observes the same value many times.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS_S = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
PREEMPTION_BUCKETS = (1, 2, 3, 4, 5, 10, 20)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")


def buckets_1_2_5(max_value: int) -> tuple[float, ...]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, ... up to ``max_value``."""
    out: list[float] = []
    exp = 0
    while True:
        for m in (1, 2, 5):
            v = m * 10**exp
            if v > max_value:
                return tuple(out)
            out.append(float(v))
        exp += 1


class Hist:
    """Fixed-bucket histogram: per-bucket counts (last = +Inf), sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0.0

    def observe(self, value: float, weight: float = 1.0) -> None:
        self.counts[bisect_left(self.bounds, value)] += weight
        self.sum += value * weight
        self.count += weight

    def observe_linear(self, first: float, step: float, n: int, weight: float = 1.0) -> None:
        """Observe ``first + step*j`` for j in 0..n-1, each ``weight`` times, in
        O(buckets): a fast-forwarded decode stretch's step times form such a ramp."""
        if n <= 0:
            return
        if step == 0.0 or n == 1:
            self.observe(first, weight * n)
            return
        prev = 0
        for i, bound in enumerate(self.bounds):
            # number of j in [0, n) with first + step*j <= bound
            x = (bound - first) / step
            if step > 0:
                le = 0 if x < 0 else min(n, int(x) + 1)
            else:
                # decreasing ramp: j >= ceil(x) satisfy it
                le = n - min(n, max(0, math.ceil(x)))
            le = max(le, prev)
            self.counts[i] += (le - prev) * weight
            prev = le
        self.counts[-1] += (n - prev) * weight
        self.sum += weight * (n * first + step * n * (n - 1) / 2)
        self.count += weight * n

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` pairs in Prometheus order, ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        acc = 0.0
        for bound, c in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += c
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), acc))
        return out


def _token_hist(max_model_len: int) -> Hist:
    return Hist(buckets_1_2_5(max_model_len))


@dataclass(slots=True)
class EngineStats:
    """Monotonic counters and histograms, named after the vLLM metrics they feed."""

    max_model_len: int = 4096
    prompt_tokens_total: int = 0
    prompt_tokens_local_compute: int = 0
    prompt_tokens_local_cache_hit: int = 0
    prompt_tokens_external_kv_transfer: int = 0
    generation_tokens_total: int = 0
    prefix_cache_queries_total: int = 0
    prefix_cache_hits_total: int = 0
    external_prefix_cache_queries_total: int = 0
    external_prefix_cache_hits_total: int = 0
    num_preemptions_total: int = 0
    num_steps_total: int = 0
    busy_s_total: float = 0.0
    request_success_total: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(FINISH_REASONS, 0)
    )
    ttft_s: Hist = field(default_factory=lambda: Hist(TTFT_BUCKETS_S))
    itl_s: Hist = field(default_factory=lambda: Hist(ITL_BUCKETS_S))
    tpot_s: Hist = field(default_factory=lambda: Hist(ITL_BUCKETS_S))
    e2e_s: Hist = field(default_factory=lambda: Hist(REQUEST_LATENCY_BUCKETS_S))
    queue_s: Hist = field(default_factory=lambda: Hist(REQUEST_LATENCY_BUCKETS_S))
    inference_s: Hist = field(default_factory=lambda: Hist(REQUEST_LATENCY_BUCKETS_S))
    prefill_s: Hist = field(default_factory=lambda: Hist(REQUEST_LATENCY_BUCKETS_S))
    decode_s: Hist = field(default_factory=lambda: Hist(REQUEST_LATENCY_BUCKETS_S))
    iteration_tokens: Hist = field(
        default_factory=lambda: Hist(tuple(float(b) for b in ITERATION_TOKEN_BUCKETS))
    )
    request_num_preemptions: Hist = field(
        default_factory=lambda: Hist(tuple(float(b) for b in PREEMPTION_BUCKETS))
    )
    params_n: Hist = field(default_factory=lambda: Hist(tuple(float(b) for b in PARAMS_N_BUCKETS)))
    request_prompt_tokens: Hist = field(init=False)
    request_generation_tokens: Hist = field(init=False)
    request_max_num_generation_tokens: Hist = field(init=False)
    params_max_tokens: Hist = field(init=False)
    request_prefill_kv_computed_tokens: Hist = field(init=False)

    def __post_init__(self) -> None:
        self.request_prompt_tokens = _token_hist(self.max_model_len)
        self.request_generation_tokens = _token_hist(self.max_model_len)
        self.request_max_num_generation_tokens = _token_hist(self.max_model_len)
        self.params_max_tokens = _token_hist(self.max_model_len)
        self.request_prefill_kv_computed_tokens = _token_hist(self.max_model_len)

    @property
    def prompt_tokens_cached_total(self) -> int:
        return self.prompt_tokens_local_cache_hit + self.prompt_tokens_external_kv_transfer
