"""The default profile and the profile-based predictor."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.policy.predictor import (
    ItlQuery,
    LatencyPredictor,
    ProfilePredictor,
    TtftQuery,
    busy_prefill_tokens_per_ms,
    prefill_tokens_per_ms,
    queued_prompt_tokens,
    step_token_budget,
)
from controlplane.profiles import CPU_TINY_FIXTURE, load_profile, parse_profile

from .helpers import snap, view


def test_interpolates_and_extrapolates() -> None:
    p = CPU_TINY_FIXTURE
    assert p.prefill_ms(256) == pytest.approx(23.87)
    assert 23.87 < p.prefill_ms(600) < 92.64
    assert p.prefill_ms(4096) > p.prefill_ms(2048)
    assert p.decode_ms(1, 128) == pytest.approx(2.45)
    assert 2.45 < p.decode_ms(3, 500) < 11.32
    assert p.decode_ms(16, 1024) > p.decode_ms(8, 1024)


@pytest.mark.parametrize(
    "rel", ["fixtures/vllm-0.32.0/profile.csv", "profiles/h100-llama3.1-8b-vllm.csv"]
)
def test_reads_both_repository_formats(shared_dir: Path, rel: str) -> None:
    prof = parse_profile((shared_dir / rel).read_text())
    assert prof.prefill_ms(1024) > prof.prefill_ms(64) > 0
    assert prof.decode_ms(8, 1024) >= prof.decode_ms(1, 1024) > 0


def test_ttft_is_queue_plus_uncached_prefill() -> None:
    pred: LatencyPredictor = ProfilePredictor()
    s = snap("a")
    base = pred.ttft_ms(TtftQuery(s, prompt_tokens=1024))
    assert base == pytest.approx(92.64)
    cached = pred.ttft_ms(TtftQuery(s, prompt_tokens=1024, cached_tokens=768))
    assert cached == pytest.approx(23.87)
    queued = pred.ttft_ms(TtftQuery(s, prompt_tokens=1024, queued_prompt_tokens=2048))
    assert queued == pytest.approx(base + 2048 / busy_prefill_tokens_per_ms(CPU_TINY_FIXTURE))
    assert pred.itl_ms(ItlQuery(s, batch=8, context_tokens=1024)) == pytest.approx(11.32)


def test_queue_drains_at_full_step_throughput_not_the_best_chunk() -> None:
    """A worker with a queue fills each step to its token budget: its drain rate is a
    full step's throughput, which on the H100 table is below the best chunk size's."""
    h100 = load_profile("h100-llama3.1-8b")
    budget = step_token_budget(h100)
    assert budget == 8192
    busy = busy_prefill_tokens_per_ms(h100)
    assert busy == pytest.approx(budget / h100.prefill_ms(budget))
    assert busy < 0.9 * prefill_tokens_per_ms(h100)
    pred = ProfilePredictor(h100)
    q = pred.ttft_ms(TtftQuery(snap("a"), prompt_tokens=1, queued_prompt_tokens=10 * budget))
    assert q == pytest.approx(10 * h100.prefill_ms(budget) + h100.prefill_ms(1), rel=1e-6)


def test_queued_tokens_take_the_larger_of_report_and_local() -> None:
    s = snap("a", waiting=2, waiting_tokens=None)
    assert queued_prompt_tokens(s, view(s), 100) == 200
    assert queued_prompt_tokens(s, view(s, pending_prefill_tokens={"a": 900}), 100) == 900


def test_predicts_from_a_loaded_profile() -> None:
    prof = load_profile("cpu-tiny")
    pred = ProfilePredictor(prof)
    s = snap("a")
    assert pred.ttft_ms(TtftQuery(s, prompt_tokens=1024)) == pytest.approx(prof.prefill_ms(1024))
    assert pred.itl_ms(ItlQuery(s, batch=4, context_tokens=512)) > 0
