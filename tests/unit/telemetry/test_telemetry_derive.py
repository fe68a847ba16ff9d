"""derive(): fixture pages against independently computed values, and constructed deltas."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from workers.agent.fakepage import PageValues, render
from workers.agent.parse import parse_page
from workers.telemetry.derive import DeriveConfig, DeriveState, Identity, derive, mark_down
from workers.telemetry.reading import Reading

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared/fixtures/vllm-0.32.0"
IDENT = Identity(cluster="c1", worker="w1", role="decode", url="http://w1:8000")

# --- an independent reading of the page text (regex + a textbook histogram_quantile) ---
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$")


def _samples(text: str, name: str) -> list[tuple[str, float]]:
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            out.append((m.group(2) or "", float(m.group(3))))
    return out


def _expected_quantile_ms(text: str, family: str, q: float) -> float | None:
    """Prometheus' documented algorithm, written out separately from workers.telemetry.histogram."""
    bks = []
    for labels, v in _samples(text, f"{family}_bucket"):
        le = re.search(r'le="([^"]+)"', labels)
        assert le
        bks.append((math.inf if le.group(1) == "+Inf" else float(le.group(1)), v))
    bks.sort()
    n = bks[-1][1]
    if n == 0:
        return None
    rank = q * n
    for i, (ub, c) in enumerate(bks):
        if c >= rank:
            if ub == math.inf:
                return bks[i - 1][0] * 1000
            lb, lc = (0.0, 0.0) if i == 0 else bks[i - 1]
            return (lb + (ub - lb) * (rank - lc) / (c - lc)) * 1000
    raise AssertionError("unreachable")


def test_metrics_after_matches_page_text() -> None:
    text = (FIXTURES / "metrics-after.txt").read_text()
    snap, _ = derive(DeriveState(), parse_page(text), ident=IDENT, ts_ms=1_000, mono_s=0.0)
    assert snap.kv_usage == _samples(text, "vllm:kv_cache_usage_perc")[0][1]
    assert snap.running == int(_samples(text, "vllm:num_requests_running")[0][1])
    assert snap.waiting == int(_samples(text, "vllm:num_requests_waiting")[0][1])
    for fam, prefix in (
        ("vllm:time_to_first_token_seconds", "ttft"),
        ("vllm:inter_token_latency_seconds", "itl"),
    ):
        for q, suf in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            got = getattr(snap, f"{prefix}_{suf}_ms")
            assert got == pytest.approx(_expected_quantile_ms(text, fam, q)), (prefix, suf)
    # spot values worked out by hand: TTFT rank 30 of 60 in (0.1, 0.25] holding 29 (11 → 40)
    assert snap.ttft_p50_ms == pytest.approx((0.1 + 0.15 * (30 - 11) / 29) * 1000)
    assert snap.model == "tiny-llama"
    assert snap.kv_capacity_tokens == 131072
    assert snap.requests_finished_total == 60.0
    assert snap.prompt_tokens_total == 79672.0 and snap.generation_tokens_total == 4459.0
    assert snap.prefix_hit_rate == pytest.approx(1664 / 79672)
    assert snap.waiting_tokens is None
    assert (snap.cluster, snap.worker, snap.role, snap.url, snap.seq) == (
        "c1",
        "w1",
        "decode",
        "http://w1:8000",
        1,
    )


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("metrics-*.txt")), ids=lambda p: p.name)
def test_every_fixture_derives(path: Path) -> None:
    snap, state = derive(
        DeriveState(), parse_page(path.read_text()), ident=IDENT, ts_ms=5, mono_s=1.0
    )
    assert snap.up and snap.ts_ms == 5 and state.seq == 1
    assert 0.0 <= snap.kv_usage <= 1.0
    for v in (snap.ttft_p50_ms, snap.ttft_p90_ms, snap.ttft_p99_ms):
        assert v is None or v > 0
    # the snapshot survives the Redis round trip
    from controlplane.schemas import WorkerSnapshot

    assert WorkerSnapshot.from_redis(snap.to_redis()) == snap


def _step(state: DeriveState, v: PageValues, t: float, cfg: DeriveConfig = DeriveConfig()):  # type: ignore[no-untyped-def]
    return derive(
        state, parse_page(render(v)), ident=IDENT, ts_ms=int(t * 1000), mono_s=t, config=cfg
    )


class TestDeltas:
    def test_rates_and_windowed_quantiles_from_deltas(self) -> None:
        s0, st = _step(
            DeriveState(),
            PageValues(prompt_tokens=1000, generation_tokens=50, ttft_s=[5.0] * 10),
            0.0,
        )
        assert s0.ttft_p50_ms is not None and s0.ttft_p50_ms > 2500  # lifetime on first page
        assert s0.prompt_tokens_per_s == 0.0
        s1, st = _step(
            st,
            PageValues(
                prompt_tokens=1500,
                generation_tokens=150,
                ttft_s=[5.0] * 10 + [0.03] * 4,
                preemptions=2,
            ),
            0.5,
        )
        assert s1.prompt_tokens_per_s == pytest.approx(1000.0)
        assert s1.gen_tokens_per_s == pytest.approx(200.0)
        assert s1.preemptions_per_s == pytest.approx(4.0)
        # only the 4 new 30 ms observations count: all in (0.02, 0.04]
        assert s1.ttft_p50_ms == pytest.approx(30.0)
        assert s1.ttft_p99_ms is not None and s1.ttft_p99_ms <= 40.0
        assert s1.extra["ttft_window_count"] == 4.0
        assert s1.seq == 2

    def test_empty_window_keeps_recent_then_none(self) -> None:
        cfg = DeriveConfig(window_s=2.0)
        base = PageValues(itl_s=[0.02] * 5)
        _, st = _step(DeriveState(), PageValues(), 0.0, cfg)
        s1, st = _step(st, base, 0.25, cfg)
        assert s1.itl_p50_ms is not None
        s2, st = _step(st, base, 1.0, cfg)  # nothing new: rolling window still has it
        assert s2.itl_p50_ms == s1.itl_p50_ms
        s3, st = _step(st, base, 3.0, cfg)  # older than window_s: no data → None
        assert s3.itl_p50_ms is None and s3.itl_p99_ms is None

    def test_counter_reset_treats_current_as_delta(self) -> None:
        _, st = _step(DeriveState(), PageValues(prompt_tokens=10_000, ttft_s=[1.0] * 50), 0.0)
        s, st = _step(st, PageValues(prompt_tokens=200, ttft_s=[0.03]), 1.0)
        assert s.prompt_tokens_per_s == pytest.approx(200.0)
        assert s.prompt_tokens_per_s >= 0
        assert s.ttft_p50_ms == pytest.approx(30.0)
        assert s.extra["counter_reset"] == 1.0 and st.resets == 1

    def test_restart_detected_by_start_time_even_if_counters_grew(self) -> None:
        _, st = _step(DeriveState(), PageValues(prompt_tokens=100, start_time_s=1.0), 0.0)
        s, _ = _step(st, PageValues(prompt_tokens=300, start_time_s=2.0), 1.0)
        assert s.prompt_tokens_per_s == pytest.approx(300.0)
        assert s.extra["counter_reset"] == 1.0

    def test_prefix_hit_rate_window_then_cumulative_fallback(self) -> None:
        _, st = _step(DeriveState(), PageValues(prefix_queries=100, prefix_hits=10), 0.0)
        s, st = _step(st, PageValues(prefix_queries=200, prefix_hits=60), 1.0)
        assert s.prefix_hit_rate == pytest.approx(0.5)
        s, st = _step(st, PageValues(prefix_queries=200, prefix_hits=60), 2.0)
        assert s.prefix_hit_rate == pytest.approx(0.3)
        s, _ = _step(DeriveState(), PageValues(), 0.0)
        assert s.prefix_hit_rate is None

    def test_missing_families_give_defaults_and_none(self) -> None:
        page = parse_page("# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 4\n")
        s, _ = derive(DeriveState(), page, ident=IDENT, ts_ms=1, mono_s=0.0)
        assert s.waiting == 4 and s.running == 0 and s.kv_usage == 0.0
        assert s.ttft_p50_ms is None and s.itl_p99_ms is None
        assert s.kv_capacity_tokens is None and s.model == "unknown"

    def test_model_flag_overrides_page(self) -> None:
        ident = Identity(cluster="c", worker="w", role="both", model="llama-8b")
        s, _ = derive(
            DeriveState(), parse_page(render(PageValues())), ident=ident, ts_ms=1, mono_s=0.0
        )
        assert s.model == "llama-8b"


class TestDown:
    def test_down_keeps_last_values_and_heartbeats(self) -> None:
        s1, st = _step(DeriveState(), PageValues(running=3, waiting=7, kv_usage=0.6), 1.0)
        d, st = mark_down(st, ident=IDENT, ts_ms=9_000)
        assert not d.up and d.ts_ms == 9_000 and d.seq == s1.seq + 1
        assert (d.running, d.waiting, d.kv_usage) == (3, 7, 0.6)
        assert d.extra["last_ok_ts_ms"] == 1000.0  # when s1 was read
        s2, _ = _step(st, PageValues(running=1), 10.0)
        assert s2.up and s2.seq == d.seq + 1 and s2.running == 1

    def test_down_before_first_success(self) -> None:
        d, st = mark_down(DeriveState(), ident=IDENT, ts_ms=5)
        assert not d.up and d.model == "unknown" and d.worker == "w1" and st.seq == 1


class TestReadingInput:
    """derive() takes a Reading from any source; the page is only one of them."""

    def test_plugin_extras_from_the_page(self) -> None:
        text = (FIXTURES / "metrics-prefill-after.txt").read_text()
        s, _ = derive(DeriveState(), parse_page(text), ident=IDENT, ts_ms=1, mono_s=0.0)
        assert s.extra["prompt_tokens_computed_total"] == 19954.0
        assert s.extra["prompt_tokens_local_cache_total"] == 0.0
        assert s.extra["prompt_tokens_external_total"] == 0.0
        assert s.extra["external_prefix_hit_rate"] == 0.0  # 0 hits of 19954 queried tokens
        assert s.extra["waiting_deferred"] == 0.0 and "preemptions_total" in s.extra

    def test_extras_absent_when_the_source_lacks_them(self) -> None:
        s, _ = _step(DeriveState(), PageValues(prompt_tokens=5), 0.0)
        assert not {"prompt_tokens_external_total", "waiting_deferred"} & set(s.extra)
        assert "external_prefix_hit_rate" not in s.extra
        assert s.extra["preemptions_total"] == 0.0

    def test_a_constructed_reading(self) -> None:
        inf = math.inf
        r0 = Reading(
            running=1,
            waiting=3,
            waiting_deferred=1,
            kv_usage=0.25,
            counters={"generation_tokens": 10, "external_prefix_queries": 100,
                      "external_prefix_hits": 10},
            histograms={"itl": ((0.01, 0.0), (0.1, 4.0), (inf, 4.0))},
            kv_capacity_tokens=512,
        )  # fmt: skip
        ident = Identity(cluster="c", worker="p", role="decode", model="m", source="plugin")
        s0, st = derive(DeriveState(), r0, ident=ident, ts_ms=0, mono_s=0.0)
        r1 = Reading(
            running=2,
            waiting=0,
            counters={"generation_tokens": 30, "external_prefix_queries": 200,
                      "external_prefix_hits": 60},
            histograms={"itl": ((0.01, 2.0), (0.1, 6.0), (inf, 6.0))},
        )  # fmt: skip
        s1, _ = derive(st, r1, ident=ident, ts_ms=500, mono_s=0.5)
        assert (s0.source, s0.model, s0.waiting, s0.kv_capacity_tokens) == ("plugin", "m", 3, 512)
        assert s0.extra["external_prefix_hit_rate"] == pytest.approx(0.1)
        assert s0.itl_p50_ms == pytest.approx(55.0)  # lifetime: rank 2 of 4 in (10, 100] ms
        assert s1.gen_tokens_per_s == pytest.approx(40.0)
        assert s1.extra["external_prefix_hit_rate"] == pytest.approx(0.5)  # 50 of 100 new
        assert s1.itl_p50_ms == pytest.approx(5.0)  # the 2 new gaps, both in (0, 10] ms
        assert s1.extra["itl_window_count"] == 2.0 and "waiting_deferred" not in s1.extra


def test_non_finite_reading_values_are_treated_as_missing() -> None:
    """derive is also fed by the in-process plugin: a NaN/Inf there must not raise
    (round(NaN)) nor reach the snapshot."""
    nan, inf = float("nan"), float("inf")
    bad = Reading(
        kv_usage=nan, running=inf, waiting=2.0, waiting_deferred=nan, start_time_s=nan,
        counters={"prompt_tokens": nan, "generation_tokens": 5.0},
        histograms={"ttft": ((0.1, nan), (inf, 1.0)), "itl": ((0.1, 1.0), (inf, 2.0))},
    )  # fmt: skip
    snap, st = derive(DeriveState(), bad, ident=IDENT, ts_ms=1, mono_s=0.0)
    snap2, _ = derive(st, bad, ident=IDENT, ts_ms=2, mono_s=1.0)
    assert snap.itl_p50_ms is not None  # the finite histogram is still used
    for s in (snap, snap2):
        assert s.kv_usage == 0.0 and s.running == 0 and s.waiting == 2
        assert s.generation_tokens_total == 5.0 and s.prompt_tokens_total == 0.0
        assert s.ttft_p50_ms is None
        values = [v for v in s.to_redis().values()]
        assert not any("nan" in v.lower() or "inf" in v.lower() for v in values), values


def test_histogram_missing_for_one_reading_is_not_a_reset() -> None:
    """A histogram left out of one reading (a NaN bucket) neither counts as a counter
    reset nor dumps the worker's lifetime into the window when it comes back."""
    base = PageValues(running=1, ttft_s=[5.0] * 20)
    _, st = _step(DeriveState(), base, 0.0)
    good = parse_page(render(PageValues(running=1, ttft_s=[5.0] * 20 + [0.03] * 2)))
    gap = Reading(
        running=1.0, counters=good.counters,
        histograms={k: v for k, v in good.histograms.items() if k != "ttft"},
        start_time_s=good.start_time_s,
    )  # fmt: skip
    s1, st = derive(st, gap, ident=IDENT, ts_ms=500, mono_s=0.5)
    assert s1.extra["counter_reset"] == 0.0
    s2, _ = derive(st, good, ident=IDENT, ts_ms=1000, mono_s=1.0)
    assert s2.extra["counter_reset"] == 0.0
    assert s2.extra["ttft_window_count"] == 2.0  # the two new ones, not the lifetime 22
    assert s2.ttft_p99_ms is not None and s2.ttft_p99_ms <= 40.0
