"""Parsing real vLLM 0.32.0 pages and broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.agent.fakepage import PageValues, render
from workers.agent.parse import PageParser, ParseError, parse_page, prefilter, split_blocks

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared/fixtures/vllm-0.32.0"
PAGES = sorted(FIXTURES.glob("metrics-*.txt"))


def test_fixture_pages_exist() -> None:
    assert len(PAGES) >= 5


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_every_fixture_page_parses(path: Path) -> None:
    page = parse_page(path.read_text())
    assert page.is_vllm
    assert page.model == "tiny-llama"
    assert page.engines == 1
    assert page.kv_capacity_tokens == 131072
    assert set(page.histograms) == {"ttft", "itl"}
    assert {"prompt_tokens", "generation_tokens", "requests_finished"} <= set(page.counters)
    assert page.start_time_s is not None


def test_loaded_page_values() -> None:
    page = parse_page((FIXTURES / "metrics-loaded.txt").read_text())
    assert (page.running, page.waiting) == (3.0, 5.0)
    assert page.kv_usage == pytest.approx(0.032258064516129004)


def test_prefilter_keeps_only_wanted_families() -> None:
    text = (FIXTURES / "metrics-after.txt").read_text()
    kept = prefilter(text)
    assert "vllm:prompt_tokens_cached_total" not in kept  # a longer name is another family
    assert "vllm:num_requests_waiting_by_reason{" in kept
    assert "_created" not in kept
    assert "python_gc" not in kept
    assert "vllm:time_to_first_token_seconds_bucket" in kept
    assert len(kept) < len(text) / 3


def test_by_source_and_by_reason_families() -> None:
    text = (FIXTURES / "metrics-prefill-after.txt").read_text()
    page = parse_page(text)
    c = page.counters
    assert (c["prompt_tokens_computed"], c["prompt_tokens_local_cache"]) == (19954.0, 0.0)
    assert c["prompt_tokens_external"] == 0.0
    assert (c["external_prefix_queries"], c["external_prefix_hits"]) == (19954.0, 0.0)
    assert page.waiting_deferred == 0.0
    loaded = parse_page((FIXTURES / "metrics-loaded.txt").read_text())
    assert loaded.waiting_deferred is not None and loaded.waiting_deferred <= (loaded.waiting or 0)
    assert parse_page(prefilter(text)) == page


def test_malformed_wanted_line_raises_parse_error() -> None:
    text = render(PageValues(running=1)).replace(
        'vllm:num_requests_running{engine="0",model_name="tiny-llama"} 1.0',
        'vllm:num_requests_running{engine="0",model_name="tiny-llama" 1.0',
    )
    with pytest.raises(ParseError):
        parse_page(text)


def test_non_metrics_page_is_not_vllm() -> None:
    assert not parse_page("<html><body>502 Bad Gateway</body></html>").is_vllm
    assert not parse_page("").is_vllm


def test_missing_families_are_none_not_zero() -> None:
    text = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 4\n"
    page = parse_page(text)
    assert page.waiting == 4.0
    assert page.running is None and page.kv_usage is None
    assert page.histograms == {} and page.counters == {}
    assert page.kv_capacity_tokens is None and page.model is None


def test_engines_are_summed_and_kv_averaged() -> None:
    page = parse_page(
        render(
            PageValues(
                running=2,
                waiting=1,
                kv_usage=0.4,
                prompt_tokens=10,
                ttft_s=[0.03],
                engines=("0", "1"),
            )
        )
    )
    assert (page.running, page.waiting, page.engines) == (4.0, 2.0, 2)
    assert page.kv_usage == pytest.approx(0.4)
    assert page.counters["prompt_tokens"] == 20.0
    assert page.histograms["ttft"][-1] == (float("inf"), 2.0)
    assert page.kv_capacity_tokens == 2 * 131072


def test_capacity_from_blocks_when_size_tokens_absent() -> None:
    text = (
        "# TYPE vllm:cache_config_info gauge\n"
        'vllm:cache_config_info{block_size="16",num_gpu_blocks="100",'
        'kv_cache_size_tokens="None"} 1\n'
    )
    assert parse_page(text).kv_capacity_tokens == 1600


def test_blocks_cover_the_wanted_families() -> None:
    blocks = split_blocks((FIXTURES / "metrics-after.txt").read_text())
    assert blocks is not None
    assert "vllm:num_requests_waiting" in blocks
    assert "waiting_by_reason" not in blocks["vllm:num_requests_waiting"]
    assert "_created" not in blocks["vllm:prompt_tokens_total"]
    assert blocks["vllm:time_to_first_token_seconds"].count("_bucket{") == 23
    assert split_blocks("vllm:num_requests_waiting 1\n") is None


def test_memoising_parser_equals_fresh_parse_over_a_sequence() -> None:
    parser = PageParser()
    seq: list[Path | str] = [
        *PAGES,
        PAGES[0],
        render(PageValues(waiting=2)),
        render(PageValues(waiting=3)),
        *PAGES,
    ]
    for item in seq:
        text = item.read_text() if isinstance(item, Path) else item
        assert parser.parse(text) == parse_page(text)


def test_memoising_parser_recovers_after_malformed_page() -> None:
    parser = PageParser()
    good = render(PageValues(running=1))
    assert parser.parse(good).running == 1.0
    with pytest.raises(ParseError):
        parser.parse(good.replace("} 1.0", "} one", 1))
    assert parser.parse(good).running == 1.0
    assert parser.parse(render(PageValues(running=4))).running == 4.0


def _poison(page: str, family: str, value: str) -> str:
    """Replace the value of every sample line of ``family`` (the name then ``{``)."""
    out = []
    for line in page.splitlines():
        if line.startswith(family + "{"):
            line = line.rsplit(" ", 1)[0] + " " + value
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf"])
def test_non_finite_gauges_and_counters_are_missing_and_counted(value: str) -> None:
    page = render(PageValues(running=2, waiting=3, prompt_tokens=100, generation_tokens=7))
    page = _poison(page, "vllm:num_requests_running", value)
    page = _poison(page, "vllm:prompt_tokens_total", value)
    parser = PageParser()
    reading = parser.parse(page)
    assert reading.running is None and reading.waiting == 3
    assert "prompt_tokens" not in reading.counters
    assert reading.counters["generation_tokens"] == 7
    assert parser.nonfinite == 2
    assert parser.parse(render(PageValues(running=2))).running == 2 and parser.nonfinite == 0


def test_non_finite_histogram_count_drops_that_histogram() -> None:
    page = render(PageValues(running=1, ttft_s=[0.03] * 4, itl_s=[0.02] * 3))
    lines = page.splitlines()
    i = next(
        n for n, ln in enumerate(lines) if ln.startswith("vllm:time_to_first_token_seconds_bucket{")
    )
    lines[i] = lines[i].rsplit(" ", 1)[0] + " NaN"
    parser = PageParser()
    reading = parser.parse("\n".join(lines) + "\n")
    assert "ttft" not in reading.histograms and "itl" in reading.histograms
    assert parser.nonfinite == 1
