"""The sim's /metrics: the ``vllm:*`` families of vLLM 0.32.0, rendered from engine state.

A custom collector (prometheus_client's pattern for proxying another system)
reads the engine's counters and histogram arrays at scrape time, so the page
always matches what the engine did and the engine never imports
prometheus_client. Family names, types and label names are pinned by a test
against the real captures in shared/fixtures/vllm-0.32.0. The ``python_*``,
``process_*`` and ``http_*`` families of a real server are not exposed: nothing in
slaplane reads them and they describe the sim process, not a worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

from workers.sim.engine import Engine
from workers.sim.stats import FINISH_REASONS, Hist

_HIST_HELP: tuple[tuple[str, str, str], ...] = (
    ("request_prompt_tokens", "request_prompt_tokens", "Number of prefill tokens processed."),
    (
        "request_generation_tokens",
        "request_generation_tokens",
        "Number of generation tokens processed.",
    ),
    (
        "iteration_tokens_total",
        "iteration_tokens",
        "Histogram of number of tokens per engine_step.",
    ),
    (
        "request_max_num_generation_tokens",
        "request_max_num_generation_tokens",
        "Histogram of maximum number of requested generation tokens.",
    ),
    ("request_params_n", "params_n", "Histogram of the n request parameter."),
    (
        "request_params_max_tokens",
        "params_max_tokens",
        "Histogram of the max_tokens request parameter.",
    ),
    ("time_to_first_token_seconds", "ttft_s", "Histogram of time to first token in seconds."),
    ("inter_token_latency_seconds", "itl_s", "Histogram of inter-token latency in seconds."),
    (
        "request_time_per_output_token_seconds",
        "tpot_s",
        "Histogram of time_per_output_token_seconds per request.",
    ),
    ("e2e_request_latency_seconds", "e2e_s", "Histogram of e2e request latency in seconds."),
    (
        "request_queue_time_seconds",
        "queue_s",
        "Histogram of time spent in WAITING phase for request.",
    ),
    (
        "request_inference_time_seconds",
        "inference_s",
        "Histogram of time spent in RUNNING phase for request.",
    ),
    (
        "request_prefill_time_seconds",
        "prefill_s",
        "Histogram of time spent in PREFILL phase for request.",
    ),
    (
        "request_decode_time_seconds",
        "decode_s",
        "Histogram of time spent in DECODE phase for request.",
    ),
    (
        "request_num_preemptions",
        "request_num_preemptions",
        "Histogram of the number of times a request was preempted.",
    ),
    (
        "request_prefill_kv_computed_tokens",
        "request_prefill_kv_computed_tokens",
        "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
    ),
)


class SimCollector:
    """Yields vLLM's metric families for one engine (``engine="0"``)."""

    def __init__(
        self,
        engine: Engine,
        model: str,
        role: str,
        created_s: float | None = None,
        kv_fetch_stages: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.role = role
        self.created_s = time.time() if created_s is None else created_s
        self._kv_fetch = kv_fetch_stages

    def _labels(self, *extra: str) -> list[str]:
        return ["0", self.model, *extra]

    def _counter(
        self, name: str, doc: str, value: float, extra: tuple[tuple[str, str], ...] = ()
    ) -> CounterMetricFamily:
        fam = CounterMetricFamily(
            f"vllm:{name}", doc, labels=["engine", "model_name", *(k for k, _ in extra)]
        )
        fam.add_metric(self._labels(*(v for _, v in extra)), value, created=self.created_s)
        return fam

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        fam = GaugeMetricFamily(f"vllm:{name}", doc, labels=["engine", "model_name"])
        fam.add_metric(self._labels(), value)
        return fam

    def _hist(self, name: str, doc: str, h: Hist) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(f"vllm:{name}", doc, labels=["engine", "model_name"])
        labels = self._labels()
        fam.add_metric(labels, h.cumulative(), h.sum)
        fam.samples.append(
            Sample(
                f"vllm:{name}_created",
                {"engine": "0", "model_name": self.model},
                self.created_s,
                None,
                None,
            )
        )
        return fam

    def collect(self) -> Iterator[Metric]:
        eng = self.engine
        st = eng.stats
        for what in ("flops", "read_bytes", "write_bytes"):
            verb = {"flops": "floating point operations", "read_bytes": "bytes read from memory"}
            desc = verb.get(what, "bytes written to memory")
            yield self._counter(
                f"estimated_{what}_per_gpu",
                f"Estimated number of {desc} per GPU (for Model Flops Utilization calculations).",
                0.0,
            )
        yield self._gauge(
            "num_requests_running",
            "Number of requests in model execution batches.",
            eng.num_running,
        )
        yield self._gauge(
            "num_requests_waiting", "Number of requests waiting to be processed.", eng.num_waiting
        )
        by_reason = GaugeMetricFamily(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for "
            "scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, "
            "KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
            labels=["engine", "model_name", "reason"],
        )
        by_reason.add_metric(self._labels("capacity"), eng.num_waiting - eng.num_waiting_deferred)
        by_reason.add_metric(self._labels("deferred"), eng.num_waiting_deferred)
        yield by_reason
        if self.role == "decode":
            yield self._kv_fetch_family()
        sleep = GaugeMetricFamily(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is "
            "awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep "
            "level 2.",
            labels=["engine", "model_name", "sleep_state"],
        )
        for state, v in (("awake", 1.0), ("weights_offloaded", 0.0), ("discard_all", 0.0)):
            sleep.add_metric(self._labels(state), v)
        yield sleep
        yield self._gauge(
            "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", eng.kv_usage_ratio
        )
        yield from self._token_counters()
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=["engine", "finished_reason", "model_name"],
        )
        for reason in FINISH_REASONS:
            success.add_metric(
                ["0", reason, self.model],
                st.request_success_total.get(reason, 0),
                created=self.created_s,
            )
        yield success
        rejections = CounterMetricFamily(
            "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            labels=["model_name", "reason"],
        )
        for reason in ("max_num_queued_reqs", "max_num_queued_tokens"):
            rejections.add_metric([self.model, reason], 0.0, created=self.created_s)
        yield rejections
        for name, attr, doc in _HIST_HELP:
            h = getattr(st, attr)
            assert isinstance(h, Hist)
            yield self._hist(name, doc, h)
        yield self._cache_config()

    def _token_counters(self) -> Iterator[Metric]:
        st = self.engine.stats
        c = self._counter
        yield c(
            "prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            st.prefix_cache_queries_total,
        )
        yield c(
            "prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            st.prefix_cache_hits_total,
        )
        ext = "from KV connector cross-instance cache sharing"
        yield c(
            "external_prefix_cache_queries",
            f"External prefix cache queries {ext}, in terms of number of queried tokens.",
            st.external_prefix_cache_queries_total,
        )
        yield c(
            "external_prefix_cache_hits",
            f"External prefix cache hits {ext}, in terms of number of cached tokens.",
            st.external_prefix_cache_hits_total,
        )
        yield c(
            "mm_cache_queries", "Multi-modal cache queries, in terms of number of queried items.", 0
        )
        yield c("mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items.", 0)
        yield c(
            "num_preemptions",
            "Cumulative number of preemption from the engine.",
            st.num_preemptions_total,
        )
        yield c("prompt_tokens", "Number of prefill tokens processed.", st.prompt_tokens_total)
        by_source = CounterMetricFamily(
            "vllm:prompt_tokens_by_source",
            "Number of prompt tokens by source.",
            labels=["engine", "model_name", "source"],
        )
        for source, v in (
            ("local_compute", st.prompt_tokens_local_compute),
            ("local_cache_hit", st.prompt_tokens_local_cache_hit),
            ("external_kv_transfer", st.prompt_tokens_external_kv_transfer),
        ):
            by_source.add_metric(self._labels(source), v, created=self.created_s)
        yield by_source
        yield c(
            "prompt_tokens_cached",
            "Number of cached prompt tokens (local + external).",
            st.prompt_tokens_cached_total,
        )
        cached = CounterMetricFamily(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), "
            "host (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or "
            "external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + "
            "vllm:external_prefix_cache_hits.",
            labels=["engine", "model_name", "source"],
        )
        for source, v in (
            ("device", st.prompt_tokens_local_cache_hit),
            ("host", 0),
            ("p2p", st.prompt_tokens_external_kv_transfer),
            ("disk", 0),
            ("external_unspecified", 0),
        ):
            cached.add_metric(self._labels(source), v, created=self.created_s)
        yield cached
        yield c(
            "generation_tokens",
            "Number of generation tokens processed.",
            st.generation_tokens_total,
        )

    def _kv_fetch_family(self) -> GaugeMetricFamily:
        fam = GaugeMetricFamily(
            "vllm:num_requests_kv_fetch_by_stage",
            "Number of waiting requests by async KV load stage. Stage labels: 'waiting_to_start' "
            "= needs an async KV load that has not started; 'in_progress' = load started and "
            "not yet reported finished; 'completed_waiting' = load finished, request not "
            "running yet.",
            labels=["engine", "model_name", "stage"],
        )
        stages = {"waiting_to_start": 0, "in_progress": self.engine.num_waiting_deferred}
        stages["completed_waiting"] = 0
        if self._kv_fetch is not None:
            stages.update(self._kv_fetch())
        for stage, v in stages.items():
            fam.add_metric(self._labels(stage), v)
        return fam

    def _cache_config(self) -> GaugeMetricFamily:
        eng = self.engine
        bs = str(eng.block_size)
        num_blocks = eng.kv.num_blocks
        info = {
            "_block_size_resolved": "True",
            "block_size": bs,
            "cache_dtype": "auto",
            "cache_hit_alignment_tokens": "None",
            "effective_attention_block_size": bs,
            "enable_mamba_shared_prefix_checkpoint": "False",
            "enable_prefix_caching": str(eng.config.enable_prefix_caching),
            "engine": "0",
            "gpu_memory_utilization": "0.92",
            "hash_block_size": "None",
            "is_attention_free": "False",
            "kv_cache_dtype_skip_layers": "[]",
            "kv_cache_layout": "None",
            "kv_cache_max_concurrency": str(round(eng.kv_capacity_tokens / eng.max_model_len, 2)),
            "kv_cache_memory_bytes": "None",
            "kv_cache_size_tokens": str(eng.kv_capacity_tokens),
            "kv_offloading_backend": "native",
            "kv_offloading_size": "None",
            "kv_sharing_fast_prefill": "False",
            "mamba_block_size": "None",
            "mamba_cache_dtype": "auto",
            "mamba_cache_mode": "none",
            "mamba_page_size_padded": "None",
            "mamba_ssm_cache_dtype": "float32",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(num_blocks),
            "num_gpu_blocks_override": "None",
            "prefix_cache_retention_interval": "0",
            "prefix_caching_hash_algo": "sha256",
            "prefix_match_unit": "None",
            "replayssm_buffer_len": "16",
            "skip_page_size_padded": "None",
            "sliding_window": "None",
            "swa_bounded_replay": "True",
            "use_kda_recoverssm": "False",
            "use_replayssm": "False",
            "user_specified_block_size": "False",
        }
        fam = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            labels=list(info),
        )
        fam.add_metric(list(info.values()), 1.0)
        return fam


def make_registry(collector: SimCollector) -> CollectorRegistry:
    """A private registry holding only the sim's families (no global REGISTRY)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg
