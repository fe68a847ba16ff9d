"""Render a /metrics page shaped like vLLM 0.32.0's, from a handful of values.

For tests and the freshness benchmark: a page server whose state changes on
demand, without a real vLLM. Names, labels, bucket bounds, ``_created`` series
and HELP/TYPE lines follow shared/fixtures/vllm-0.32.0/metrics-after.txt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

TTFT_BOUNDS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BOUNDS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)


@dataclass(frozen=True, slots=True)
class PageValues:
    """Worker state to render; histogram observations are raw values in seconds."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    preemptions: float = 0.0
    prefix_queries: float = 0.0
    prefix_hits: float = 0.0
    finished: float = 0.0
    ttft_s: Sequence[float] = ()
    itl_s: Sequence[float] = ()
    start_time_s: float = 1_795_508_700.0
    model: str = "tiny-llama"
    engines: Sequence[str] = ("0",)
    extra_lines: Sequence[str] = field(default_factory=tuple)


def _labels(engine: str, model: str, more: Mapping[str, str] | None = None) -> str:
    items = {"engine": engine, **(more or {}), "model_name": model}
    return "{" + ",".join(f'{k}="{v}"' for k, v in items.items()) + "}"


def _hist(
    out: list[str],
    name: str,
    doc: str,
    bounds: Sequence[float],
    obs: Sequence[float],
    labs: Sequence[str],
) -> None:
    out += [f"# HELP {name} {doc}", f"# TYPE {name} histogram"]
    for lab in labs:
        for b in (*bounds, float("inf")):
            le = "+Inf" if b == float("inf") else repr(float(b))
            n = sum(1 for o in obs if o <= b)
            blab = lab.replace(",model_name", ',le="' + le + '",model_name')
            out.append(f"{name}_bucket{blab} {float(n)}")
        out.append(f"{name}_count{lab} {float(len(obs))}")
        out.append(f"{name}_sum{lab} {float(sum(obs))}")
    out += [f"# HELP {name}_created {doc}", f"# TYPE {name}_created gauge"]
    out += [f"{name}_created{lab} 1.7955087295e+09" for lab in labs]


def render(v: PageValues) -> str:
    """The page text; every engine (data-parallel rank) repeats the same values, grouped
    under one HELP/TYPE per family as prometheus_client writes them."""
    labs = [_labels(eng, v.model) for eng in v.engines]
    out = [
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {v.start_time_s}",
    ]
    gauges = (
        ("vllm:num_requests_running", "Requests in model execution batches.", v.running),
        ("vllm:num_requests_waiting", "Requests waiting to be processed.", v.waiting),
        ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", v.kv_usage),
    )
    for name, doc, val in gauges:
        out += [f"# HELP {name} {doc}", f"# TYPE {name} gauge"]
        out += [f"{name}{lab} {float(val)}" for lab in labs]
    counters = (
        ("vllm:prefix_cache_queries", v.prefix_queries),
        ("vllm:prefix_cache_hits", v.prefix_hits),
        ("vllm:num_preemptions", v.preemptions),
        ("vllm:prompt_tokens", v.prompt_tokens),
        ("vllm:generation_tokens", v.generation_tokens),
    )
    for name, val in counters:
        out += [f"# HELP {name}_total Counter {name}.", f"# TYPE {name}_total counter"]
        out += [f"{name}_total{lab} {float(val)}" for lab in labs]
        out += [f"# HELP {name}_created Counter {name}.", f"# TYPE {name}_created gauge"]
        out += [f"{name}_created{lab} 1.7955087295e+09" for lab in labs]
    out += [
        "# HELP vllm:request_success_total Count of successfully processed requests.",
        "# TYPE vllm:request_success_total counter",
    ]
    for eng in v.engines:
        for reason in ("stop", "length", "abort"):
            val = v.finished if reason == "length" else 0.0
            labr = _labels(eng, v.model, {"finished_reason": reason})
            out.append(f"vllm:request_success_total{labr} {float(val)}")
    ttft_doc = "Time to first token in seconds."
    _hist(out, "vllm:time_to_first_token_seconds", ttft_doc, TTFT_BOUNDS, v.ttft_s, labs)
    itl_doc = "Inter-token latency in seconds."
    _hist(out, "vllm:inter_token_latency_seconds", itl_doc, ITL_BOUNDS, v.itl_s, labs)
    out += [
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
        "# TYPE vllm:cache_config_info gauge",
    ]
    out += [
        f'vllm:cache_config_info{{block_size="128",engine="{eng}",kv_cache_size_tokens="131072",'
        f'num_gpu_blocks="1024"}} 1.0'
        for eng in v.engines
    ]
    out += list(v.extra_lines)
    return "\n".join(out) + "\n"
