"""vLLM /metrics page → a ``Reading`` (workers.telemetry): raw numbers, no derivation, no I/O.

Only the families the agent needs are handed to prometheus_client's parser: a
vLLM page is ~55 kB and ~90 families, and cutting out the ~16 wanted family
blocks (each starts at its ``# HELP`` line, as prometheus_client writes them)
takes parsing from ~6 ms to ~1.5 ms. ``PageParser`` also remembers each block's
text and parsed samples from the previous scrape and re-parses only blocks that
changed (cache_config_info never does; an idle worker's histograms neither), so
32 agents can scrape at 10 Hz on two cores. Output is identical either way.

Parser quirks (see shared/fixtures/vllm-0.32.0/README.md): counter family names
lose their ``_total`` suffix, and ``*_created`` series form separate gauge
families (they are filtered out here). Values of several engines (data-parallel
ranks, ``engine`` label) are summed, except KV usage which is averaged.

A NaN or infinite value (a gauge computed as 0/0, a broken exporter) is treated as
missing: the gauge or counter sample is skipped, a histogram with a non-finite
bucket count is left out whole. ``PageParser.nonfinite`` tells how many samples the
last page had like that (the agent counts them).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from workers.telemetry import histogram
from workers.telemetry import reading as r
from workers.telemetry.reading import Reading

# exposed family name (as on the page) → Reading field
_GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
    "process_start_time_seconds": "start_time_s",
}
# labelled gauge → (label, label value → Reading field)
_LABELLED_GAUGES = {
    "vllm:num_requests_waiting_by_reason": ("reason", {"deferred": "waiting_deferred"}),
}
# page name (with _total) → key in Reading.counters
_COUNTERS = {
    "vllm:prompt_tokens_total": r.PROMPT_TOKENS,
    "vllm:generation_tokens_total": r.GENERATION_TOKENS,
    "vllm:num_preemptions_total": r.PREEMPTIONS,
    "vllm:prefix_cache_queries_total": r.PREFIX_QUERIES,
    "vllm:prefix_cache_hits_total": r.PREFIX_HITS,
    "vllm:external_prefix_cache_queries_total": r.EXTERNAL_PREFIX_QUERIES,
    "vllm:external_prefix_cache_hits_total": r.EXTERNAL_PREFIX_HITS,
    "vllm:request_success_total": r.REQUESTS_FINISHED,
}
# labelled counter → (label, label value → key in Reading.counters)
_LABELLED_COUNTERS = {
    "vllm:prompt_tokens_by_source_total": (
        "source",
        {
            "local_compute": r.PROMPT_TOKENS_COMPUTED,
            "local_cache_hit": r.PROMPT_TOKENS_LOCAL_CACHE,
            "external_kv_transfer": r.PROMPT_TOKENS_EXTERNAL,
        },
    ),
}
_HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": r.TTFT,
    "vllm:inter_token_latency_seconds": r.ITL,
}
_INFO = "vllm:cache_config_info"

WANTED: frozenset[str] = frozenset(
    [*_GAUGES, *_LABELLED_GAUGES, *_COUNTERS, *_LABELLED_COUNTERS, _INFO]
    + [f"{h}{s}" for h in _HISTOGRAMS for s in ("_bucket", "_count", "_sum")]
)
"""Sample names (as exposed on the page) the agent reads; every other line is skipped."""

_TYPE_NAMES: frozenset[str] = frozenset(
    [*_GAUGES, *_LABELLED_GAUGES, *_COUNTERS, *_LABELLED_COUNTERS, _INFO, *_HISTOGRAMS]
)


class ParseError(ValueError):
    """The page is not valid Prometheus text exposition."""


def _line_name(line: str) -> str | None:
    """Sample (or ``# TYPE``/``# HELP``) name of one exposition line."""
    if line.startswith("#"):
        parts = line.split(" ", 3)
        return parts[2] if len(parts) > 2 and parts[1] in ("TYPE", "HELP") else None
    end = len(line)
    for sep in ("{", " "):
        i = line.find(sep)
        if 0 <= i < end:
            end = i
    return line[:end]


def prefilter(text: str) -> str:
    """Keep only the lines of the families in ``WANTED`` (metadata lines included).

    Line-by-line fallback for pages without ``# HELP`` lines (hand-written or
    other exporters); see ``split_blocks`` for the fast path."""
    keep: list[str] = []
    for line in text.splitlines():
        name = _line_name(line)
        if name is None:
            continue
        if line.startswith("#"):
            if name in _TYPE_NAMES:
                keep.append(line)
        elif name in WANTED:
            keep.append(line)
    keep.append("")
    return "\n".join(keep)


def split_blocks(text: str) -> dict[str, str] | None:
    """Wanted family name → its block of lines, from ``# HELP name`` to the next ``# HELP``.

    None when the page has no HELP lines (use ``prefilter`` then)."""
    if "# HELP " not in text:
        return None
    blocks: dict[str, str] = {}
    for name in _TYPE_NAMES:
        marker = f"# HELP {name} "
        i = text.find(marker)
        while i > 0 and text[i - 1] != "\n":
            i = text.find(marker, i + 1)
        if i < 0:
            continue
        j = text.find("\n# HELP ", i + len(marker))
        blocks[name] = text[i : len(text) if j < 0 else j + 1]
    return blocks


def _capacity(labels: dict[str, str]) -> int | None:
    """KV capacity in tokens from cache_config_info labels (direct, or blocks x block size)."""
    direct = labels.get("kv_cache_size_tokens", "")
    if direct.isdigit():
        return int(direct)
    blocks, size = labels.get("num_gpu_blocks", ""), labels.get("block_size", "")
    if blocks.isdigit() and size.isdigit():
        return int(blocks) * int(size)
    return None


def _parse_samples(text: str) -> list[Sample]:
    try:
        return [smp for fam in text_string_to_metric_families(text) for smp in fam.samples]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ParseError(f"malformed metrics page: {exc}") from exc


class PageParser:
    """Parses pages of one worker, re-parsing only family blocks that changed since the
    previous page. One instance per scraped worker; not shared across workers."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[str, list[Sample]]] = {}
        self.nonfinite = 0
        """Samples of the last parsed page skipped for a NaN/Inf value."""

    def _samples(self, text: str) -> Iterator[Sample]:
        blocks = split_blocks(text)
        if blocks is None:
            self._memo.clear()
            yield from _parse_samples(prefilter(text))
            return
        memo: dict[str, tuple[str, list[Sample]]] = {}
        for name, block in blocks.items():
            cached = self._memo.get(name)
            samples = cached[1] if cached and cached[0] == block else _parse_samples(block)
            memo[name] = (block, samples)
        self._memo = memo
        for _, samples in memo.values():
            yield from samples

    def parse(self, text: str) -> Reading:
        """Parse one /metrics page; raises ParseError on malformed exposition text."""
        self.nonfinite = 0
        reading, self.nonfinite = _build(self._samples(text))
        return reading


def parse_page(text: str) -> Reading:
    """Parse one /metrics page without memo; raises ParseError on malformed text."""
    return PageParser().parse(text)


def _build(samples: Iterator[Sample]) -> tuple[Reading, int]:
    """The reading, and how many samples were skipped for a non-finite value."""
    nonfinite = 0
    bad_histograms: set[str] = set()
    gauges: dict[str, list[float]] = {}
    counters: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    capacity: int | None = None
    model: str | None = None
    engines: set[str] = set()
    try:
        for s in samples:
            if s.name == "vllm:num_requests_running":
                model = model or s.labels.get("model_name")
                engines.add(s.labels.get("engine", ""))
            if (
                s.name in WANTED
                and not s.name.endswith(("_count", "_sum"))  # read by nothing
                and not math.isfinite(float(s.value))
            ):
                nonfinite += 1
                if s.name.endswith("_bucket") and s.name[: -len("_bucket")] in _HISTOGRAMS:
                    bad_histograms.add(_HISTOGRAMS[s.name[: -len("_bucket")]])
                continue
            if s.name in _GAUGES:
                gauges.setdefault(_GAUGES[s.name], []).append(float(s.value))
            elif s.name in _COUNTERS:
                key = _COUNTERS[s.name]
                counters[key] = counters.get(key, 0.0) + float(s.value)
            elif s.name in _LABELLED_COUNTERS:
                label, keys = _LABELLED_COUNTERS[s.name]
                ckey = keys.get(s.labels.get(label, ""))
                if ckey is not None:
                    counters[ckey] = counters.get(ckey, 0.0) + float(s.value)
            elif s.name in _LABELLED_GAUGES:
                label, names = _LABELLED_GAUGES[s.name]
                gkey = names.get(s.labels.get(label, ""))
                if gkey is not None:
                    gauges.setdefault(gkey, []).append(float(s.value))
            elif s.name.endswith("_bucket") and s.name[: -len("_bucket")] in _HISTOGRAMS:
                key = _HISTOGRAMS[s.name[: -len("_bucket")]]
                le = float(s.labels["le"])
                if math.isnan(le):
                    nonfinite += 1
                    bad_histograms.add(key)
                    continue
                buckets.setdefault(key, []).append((le, float(s.value)))
            elif s.name == _INFO:
                cap = _capacity(s.labels)
                if cap is not None:
                    capacity = (capacity or 0) + cap
    except (ValueError, KeyError) as exc:
        raise ParseError(f"malformed metrics page: {exc}") from exc

    def _sum(key: str) -> float | None:
        vals = gauges.get(key)
        return sum(vals) if vals else None

    kv = gauges.get("kv_usage")
    start = gauges.get("start_time_s")
    for key in bad_histograms:
        buckets.pop(key, None)
    reading = Reading(
        kv_usage=sum(kv) / len(kv) if kv else None,
        running=_sum("running"),
        waiting=_sum("waiting"),
        waiting_deferred=_sum("waiting_deferred"),
        start_time_s=start[0] if start else None,
        counters=counters,
        histograms={k: histogram.normalize(v) for k, v in buckets.items()},
        kv_capacity_tokens=capacity,
        model=model,
        engines=len(engines),
    )
    return reading, nonfinite
