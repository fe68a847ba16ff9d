"""The one input of the snapshot derivation: a worker's counters as they stand at one time.

Both telemetry sources produce a ``Reading``: the agent by parsing a scraped vLLM
/metrics page (``workers.agent.parse``), the in-process vLLM plugin by folding vLLM's
per-step stats into running totals (``workers.vllm_plugin.accumulator``). Everything
here is cumulative since the worker started, as a Prometheus page shows it; the
derivation (``workers.telemetry.derive``) turns two consecutive readings into rates,
windowed quantiles and ratios.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from workers.telemetry.histogram import Buckets

# --- counter keys (``Reading.counters``), with the vLLM 0.32 family each mirrors -----------
PROMPT_TOKENS = "prompt_tokens"
"""``vllm:prompt_tokens_total``: prompt tokens of scheduled prefills, whatever their source."""
GENERATION_TOKENS = "generation_tokens"
"""``vllm:generation_tokens_total``."""
PREEMPTIONS = "preemptions"
"""``vllm:num_preemptions_total``."""
PREFIX_QUERIES = "prefix_queries"
"""``vllm:prefix_cache_queries_total`` (tokens)."""
PREFIX_HITS = "prefix_hits"
"""``vllm:prefix_cache_hits_total`` (tokens)."""
EXTERNAL_PREFIX_QUERIES = "external_prefix_queries"
"""``vllm:external_prefix_cache_queries_total`` (KV connector, tokens)."""
EXTERNAL_PREFIX_HITS = "external_prefix_hits"
"""``vllm:external_prefix_cache_hits_total`` (KV connector, tokens)."""
REQUESTS_FINISHED = "requests_finished"
"""``vllm:request_success_total`` summed over finish reasons."""
PROMPT_TOKENS_COMPUTED = "prompt_tokens_computed"
"""``vllm:prompt_tokens_by_source_total{source="local_compute"}``."""
PROMPT_TOKENS_LOCAL_CACHE = "prompt_tokens_local_cache"
"""``vllm:prompt_tokens_by_source_total{source="local_cache_hit"}``."""
PROMPT_TOKENS_EXTERNAL = "prompt_tokens_external"
"""``vllm:prompt_tokens_by_source_total{source="external_kv_transfer"}``."""

COUNTER_KEYS: tuple[str, ...] = (
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    PREEMPTIONS,
    PREFIX_QUERIES,
    PREFIX_HITS,
    EXTERNAL_PREFIX_QUERIES,
    EXTERNAL_PREFIX_HITS,
    REQUESTS_FINISHED,
    PROMPT_TOKENS_COMPUTED,
    PROMPT_TOKENS_LOCAL_CACHE,
    PROMPT_TOKENS_EXTERNAL,
)

# --- histogram keys (``Reading.histograms``, seconds) -----------------------------------
TTFT = "ttft"
"""``vllm:time_to_first_token_seconds``."""
ITL = "itl"
"""``vllm:inter_token_latency_seconds``."""

TTFT_BOUNDS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
"""vLLM 0.32's default TTFT bucket bounds (``vllm/v1/metrics/buckets.py``)."""
ITL_BOUNDS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
"""vLLM 0.32's default inter-token-latency bucket bounds."""


@dataclass(frozen=True, slots=True)
class Reading:
    """Gauges as they are, counters and histogram buckets cumulative since the worker
    started. ``None`` (or an absent key) means the source did not have that value."""

    kv_usage: float | None = None
    """KV cache blocks in use, 0-1 (mean over engines)."""
    running: float | None = None
    waiting: float | None = None
    """Queued requests, deferred ones included (vLLM's ``num_requests_waiting``)."""
    waiting_deferred: float | None = None
    """Of ``waiting``, those the scheduler skipped (``waiting_by_reason{reason="deferred"}``)."""
    start_time_s: float | None = None
    """Process start time; a change means the worker restarted (counters began again)."""
    counters: Mapping[str, float] = field(default_factory=dict)
    """Cumulative counters by the keys above."""
    histograms: Mapping[str, Buckets] = field(default_factory=dict)
    """Cumulative ``(le, count)`` buckets (ending with ``+Inf``) by ``TTFT``/``ITL``."""
    kv_capacity_tokens: int | None = None
    model: str | None = None
    engines: int = 0
    """Engine cores (data-parallel ranks) the values cover; 0 when unknown."""

    @property
    def is_vllm(self) -> bool:
        """At least one of the core scheduler gauges was present."""
        return self.running is not None or self.waiting is not None or self.kv_usage is not None
