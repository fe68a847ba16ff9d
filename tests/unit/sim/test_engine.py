"""The worker model on constructed cases: each test pins one scheduling rule."""

from __future__ import annotations

import pytest

from controlplane.profiles import Profile, load_profile
from workers.sim import Engine, EngineConfig, SimRequest, StepResult


@pytest.fixture(scope="module")
def tiny() -> Profile:
    return load_profile("cpu-tiny")


@pytest.fixture(scope="module")
def h100() -> Profile:
    return load_profile("h100-llama3.1-8b")


def run(eng: Engine, until_s: float = 1e9, horizon: bool = False) -> list[StepResult]:
    out: list[StepResult] = []
    while (t := eng.next_event_s()) is not None and t < until_s:
        res = eng.step(t, horizon_s=until_s if horizon else None)
        if res is None:
            break
        out.append(res)
    return out


def test_single_request_timing_matches_profile(tiny: Profile) -> None:
    eng = Engine(tiny)
    eng.add_request(SimRequest("a", 1024, 4), 0.0)
    steps = run(eng)
    assert steps[0].first_tokens == ["a"]
    assert steps[0].end_s == pytest.approx(tiny.prefill_ms(1024) / 1000)
    # decode step i computes token at context 1024 + i
    for i, s in enumerate(steps[1:], start=1):
        assert s.duration_s == pytest.approx(tiny.decode_ms(1, 1024 + i) / 1000)
    fin = steps[-1].finished[0]
    assert (fin.output_tokens, fin.reason) == (4, "length")
    assert fin.ttft_s == pytest.approx(tiny.prefill_ms(1024) / 1000)
    assert eng.stats.prompt_tokens_total == 1024 and eng.stats.generation_tokens_total == 4


def test_chunked_prefill_respects_token_budget(tiny: Profile) -> None:
    eng = Engine(tiny)  # budget 2048
    eng.add_request(SimRequest("long", 3000, 2), 0.0)
    steps = run(eng)
    assert [s.num_prefill_tokens for s in steps[:2]] == [2048, 952]
    assert steps[0].tokens == [] and steps[1].first_tokens == ["long"]
    assert steps[1].end_s == pytest.approx((tiny.prefill_ms(2048) + tiny.prefill_ms(952)) / 1000)


def test_decodes_share_the_budget_with_a_new_prefill(tiny: Profile) -> None:
    eng = Engine(tiny)
    eng.add_request(SimRequest("a", 100, 50), 0.0)
    first = eng.step(0.0)
    assert first is not None
    eng.add_request(SimRequest("b", 4000, 5), first.end_s)
    mixed = eng.step(first.end_s)
    assert mixed is not None
    assert (mixed.num_decode_tokens, mixed.num_prefill_tokens) == (1, 2047)
    base = tiny.base_step_ms
    expected = tiny.prefill_ms(2047) + tiny.decode_ms(1, 101) - base
    assert mixed.duration_s == pytest.approx(expected / 1000)


def test_decode_batch_time_uses_batch_size_and_mean_context(tiny: Profile) -> None:
    eng = Engine(tiny)
    for i in range(4):
        eng.add_request(SimRequest(f"r{i}", 128 * (i + 1), 10), 0.0)
    steps = run(eng)
    pure = [s for s in steps if s.num_decode_tokens == 4 and s.num_prefill_tokens == 0]
    assert pure
    mean_ctx = (128 + 256 + 384 + 512) / 4 + 1
    assert pure[0].duration_s == pytest.approx(tiny.decode_ms(4, mean_ctx) / 1000)


def test_kv_full_keeps_requests_waiting(tiny: Profile) -> None:
    eng = Engine(tiny, EngineConfig(kv_capacity_tokens=1024))  # 8 blocks of 128
    eng.add_request(SimRequest("a", 600, 100), 0.0)
    eng.add_request(SimRequest("b", 600, 100), 0.0)
    eng.step(0.0)
    assert (eng.num_running, eng.num_waiting) == (1, 1)
    assert eng.kv_usage_ratio == pytest.approx(5 / 8)
    run(eng)
    assert eng.stats.request_success_total["length"] == 2
    assert eng.kv_usage_ratio == 0.0


def test_max_num_seqs_limits_running(tiny: Profile) -> None:
    eng = Engine(tiny, EngineConfig(max_num_seqs=2))
    for i in range(3):
        eng.add_request(SimRequest(f"r{i}", 10, 3), 0.0)
    eng.step(0.0)
    assert (eng.num_running, eng.num_waiting) == (2, 1)


def test_preemption_recomputes_and_everyone_finishes(tiny: Profile) -> None:
    # 10 blocks: two requests of 512 prompt grow past 640 tokens each → someone is preempted
    eng = Engine(tiny, EngineConfig(kv_capacity_tokens=1280))
    eng.add_request(SimRequest("a", 512, 300), 0.0)
    eng.add_request(SimRequest("b", 512, 300), 0.0)
    steps = run(eng)
    preempted = [rid for s in steps for rid in s.preempted]
    assert preempted == ["b"] or preempted[0] == "b"  # the last admitted goes first
    fins = {f.request_id: f for s in steps for f in s.finished}
    assert fins["a"].output_tokens == fins["b"].output_tokens == 300
    assert fins["b"].num_preemptions >= 1
    assert eng.stats.num_preemptions_total == len(preempted)
    assert eng.stats.generation_tokens_total == 600


def test_prefix_hits_with_mooncake_hash_ids(h100: Profile) -> None:
    eng = Engine(h100)  # block 16, Mooncake unit 512 tokens = 32 blocks
    eng.add_request(SimRequest("a", 1600, 2, hash_ids=[7, 8, 9, 10]), 0.0)
    first = run(eng)
    eng.add_request(SimRequest("b", 1600, 2, hash_ids=[7, 8, 9, 11]), first[-1].end_s)
    second = run(eng)
    st = eng.stats
    assert st.prefix_cache_queries_total == 3200
    assert st.prefix_cache_hits_total == 1536  # 3 full 512-token units
    assert st.prompt_tokens_local_cache_hit == 1536
    fb = second[-1].finished[0]
    assert fb.cached_tokens == 1536
    assert second[0].num_prefill_tokens == 64
    # a different first hash id shares nothing (chained keys)
    eng.add_request(SimRequest("c", 1600, 2, hash_ids=[99, 8, 9, 10]), second[-1].end_s)
    run(eng)
    assert st.prefix_cache_hits_total == 1536


def test_prefix_hits_with_token_ids_leave_one_token_to_compute(tiny: Profile) -> None:
    eng = Engine(tiny)
    ids = list(range(256))
    eng.add_request(SimRequest("a", 256, 1, prompt_token_ids=ids), 0.0)
    run(eng)
    eng.add_request(SimRequest("b", 256, 1, prompt_token_ids=ids), 1.0)
    steps = run(eng)
    assert eng.stats.prefix_cache_hits_total == 128  # full hit → last block recomputed
    assert steps[0].num_prefill_tokens == 128


def test_pd_decode_side_skips_prefill(h100: Profile) -> None:
    eng = Engine(h100)
    eng.add_request(SimRequest("d", 8000, 3, remote_prefill_tokens=8000), 0.0)
    steps = run(eng)
    assert steps[0].first_tokens == ["d"] and steps[0].num_prefill_tokens == 0
    assert steps[0].duration_s == pytest.approx(h100.decode_ms(1, 8000) / 1000)
    st = eng.stats
    assert st.prompt_tokens_external_kv_transfer == 8000
    assert st.prompt_tokens_local_compute == 0
    assert st.external_prefix_cache_hits_total == 8000


def test_pd_prefill_side_is_max_tokens_one(h100: Profile) -> None:
    eng = Engine(h100)
    eng.add_request(SimRequest("p", 4096, 1), 0.0)
    steps = run(eng)
    assert len(steps) == 1 and steps[0].finished[0].output_tokens == 1
    assert steps[0].end_s == pytest.approx(h100.prefill_ms(4096) / 1000)


def test_kv_transfer_delay_defers_admission(h100: Profile) -> None:
    eng = Engine(h100, EngineConfig(kv_transfer_base_s=0.5))
    eng.add_request(SimRequest("d", 100, 2, remote_prefill_tokens=100), 0.0)
    assert eng.num_waiting_deferred == 1 and eng.step(0.0) is None
    assert eng.next_event_s() == pytest.approx(0.5)
    steps = run(eng)
    assert steps[0].start_s == pytest.approx(0.5)
    assert steps[-1].finished[0].queue_s == pytest.approx(0.5)


def test_abort_frees_kv(tiny: Profile) -> None:
    eng = Engine(tiny)
    eng.add_request(SimRequest("a", 1000, 100), 0.0)
    eng.step(0.0)
    assert eng.kv_usage_ratio > 0
    fin = eng.abort("a", 0.5)
    assert fin is not None and fin.reason == "abort"
    assert eng.kv_usage_ratio == 0 and eng.next_event_s() is None
    assert eng.stats.request_success_total["abort"] == 1


def test_unstarted_lists_only_never_scheduled_waiting_requests(tiny: Profile) -> None:
    eng = Engine(tiny, EngineConfig(max_num_batched_tokens=512))
    eng.add_request(SimRequest("a", 1000, 10), 0.0)
    eng.add_request(SimRequest("b", 400, 10), 0.0)
    assert eng.unstarted() == ["a", "b"]
    eng.step(0.0)  # a's first chunk fills the budget; b has not been scheduled
    assert eng.unstarted() == ["b"]
    assert eng.abort("b", 0.01) is not None and eng.unstarted() == []


def test_rejects_requests_that_cannot_fit(tiny: Profile) -> None:
    eng = Engine(tiny)
    with pytest.raises(ValueError, match="max_model_len"):
        eng.add_request(SimRequest("x", 4000, 200), 0.0)


def test_fast_forward_matches_step_by_step(h100: Profile) -> None:
    def build() -> Engine:
        eng = Engine(h100, EngineConfig(kv_capacity_tokens=6000))
        for i in range(6):
            eng.add_request(SimRequest(f"r{i}", 300 + 50 * i, 200 + 37 * i), 0.0)
        return eng

    slow, fast = build(), build()
    slow_steps = run(slow)
    fast_steps = run(fast, until_s=1e9, horizon=True)
    assert len(fast_steps) < len(slow_steps) / 5
    f_slow = {f.request_id: f for s in slow_steps for f in s.finished}
    f_fast = {f.request_id: f for s in fast_steps for f in s.finished}
    for rid, f in f_slow.items():
        assert f_fast[rid].finish_s == pytest.approx(f.finish_s, rel=1e-3)
        assert f_fast[rid].first_token_s == pytest.approx(f.first_token_s)
    assert fast.stats.generation_tokens_total == slow.stats.generation_tokens_total
    assert fast.stats.num_steps_total == slow.stats.num_steps_total
    assert fast.stats.itl_s.count == slow.stats.itl_s.count
    assert fast.stats.itl_s.sum == pytest.approx(slow.stats.itl_s.sum, rel=1e-3)
    assert fast.stats.num_preemptions_total == slow.stats.num_preemptions_total


def test_fast_forward_never_swallows_a_first_token(h100: Profile) -> None:
    """A prompt whose last chunk is one token (8,192 prompt beside one decode: 8,191
    then 1) looks like a decode; its step must still record the first token."""
    eng = Engine(h100)
    eng.add_request(SimRequest("a", 16, 200), 0.0)
    steps = run(eng, until_s=0.1, horizon=True)
    eng.add_request(SimRequest("b", 8192, 2), 0.1)
    steps += run(eng, until_s=1e9, horizon=True)
    fin = {f.request_id: f for s in steps for f in s.finished}
    assert any(s.first_tokens == ["b"] for s in steps)
    assert fin["b"].first_token_s is not None
    assert fin["b"].first_token_s < fin["b"].finish_s
    assert eng.stats.ttft_s.count == 2


def test_fast_forward_stops_at_the_horizon(h100: Profile) -> None:
    eng = Engine(h100)
    eng.add_request(SimRequest("a", 100, 1000), 0.0)
    eng.step(0.0)
    res = eng.step(eng.busy_until_s, horizon_s=0.1)
    assert res is not None and res.num_steps > 1
    assert res.end_s >= 0.1 and res.end_s - res.duration_s / res.num_steps < 0.1
