"""The P/D connector's engine terms: KV load inside the decode step that admits a remote-KV
request (every co-running stream waits), KV save on producer prefill chunks, decode
slowdown of engines sharing cores. Zero terms must leave the engine exactly as it was."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from controlplane.profiles import PROFILES_DIR, Profile, load_profile, parse_profile
from workers.sim import Engine, SimRequest, StepResult

BASE = "cpu-tiny"


@pytest.fixture(scope="module")
def base() -> Profile:
    return load_profile(BASE)


@pytest.fixture(scope="module")
def pd(base: Profile) -> Profile:
    return replace(
        base, kv_load_base_ms=20.0, kv_load_ms_per_token=0.02, kv_save_base_ms=5.0,
        kv_save_ms_per_token=0.03,
    )  # fmt: skip


def run(eng: Engine, until_s: float = 1e9) -> list[StepResult]:
    out: list[StepResult] = []
    while (t := eng.next_event_s()) is not None and t < until_s:
        res = eng.step(t)
        if res is None:
            break
        out.append(res)
    return out


def test_remote_kv_admission_stalls_the_co_running_decodes(base: Profile, pd: Profile) -> None:
    eng = Engine(pd)
    for i in range(4):
        eng.add_request(SimRequest(f"bg{i}", 64, 50), 0.0)
    first = eng.step(0.0)
    assert first is not None and len(first.first_tokens) == 4
    plain = eng.step(first.end_s)  # a pure decode step of 4
    assert plain is not None
    assert plain.duration_s * 1000 == pytest.approx(pd.decode_ms(4, 65))
    eng.add_request(SimRequest("d", 1500, 3, remote_prefill_tokens=1500), plain.end_s)
    joined = eng.step(plain.end_s)
    assert joined is not None and joined.first_tokens == ["d"]
    assert joined.num_prefill_tokens == 0  # skip-prefill: only the load is new
    ctx = (4 * 66 + 1500) / 5  # 64-token prompts + 2 tokens each
    want = pd.decode_ms(5, ctx) + pd.kv_load_ms(1500)
    assert joined.duration_s * 1000 == pytest.approx(want)
    assert pd.kv_load_ms(1500) == pytest.approx(50.0)
    # every co-running stream got its token only at the end of the stalled step
    assert set(joined.tokens) == {"bg0", "bg1", "bg2", "bg3", "d"}
    after = eng.step(joined.end_s)  # the load is charged once
    assert after is not None
    assert after.duration_s * 1000 == pytest.approx(pd.decode_ms(5, ctx + 1))


def test_producer_prefill_pays_the_kv_save(base: Profile, pd: Profile) -> None:
    eng = Engine(pd)
    eng.add_request(SimRequest("p", 1000, 1, remote_decode=True), 0.0)
    eng.add_request(SimRequest("plain", 1000, 1), 0.0)
    steps = run(eng)
    # both prefills share one step (budget 2048); one of them saves its KV
    assert len(steps) == 1
    assert steps[0].duration_s * 1000 == pytest.approx(pd.prefill_ms(2000) + 5.0 + 30.0)


def test_chunked_producer_prefill_pays_per_chunk(pd: Profile) -> None:
    eng = Engine(pd)
    eng.add_request(SimRequest("p", 3000, 1, remote_decode=True), 0.0)
    steps = run(eng)
    assert [s.num_prefill_tokens for s in steps] == [2048, 952]
    assert steps[0].duration_s * 1000 == pytest.approx(pd.prefill_ms(2048) + pd.kv_save_ms(2048))
    assert steps[1].duration_s * 1000 == pytest.approx(pd.prefill_ms(952) + pd.kv_save_ms(952))


def test_decode_scale_slows_decode_steps_only(base: Profile) -> None:
    slow = replace(base, decode_scale=1.5)
    assert slow.decode_ms(4, 1024) == pytest.approx(1.5 * base.decode_ms(4, 1024))
    assert slow.prefill_ms(1024) == base.prefill_ms(1024)


def _workload(seed: int) -> list[tuple[float, SimRequest]]:
    rng = random.Random(seed)
    out, t = [], 0.0
    for i in range(300):
        t += rng.expovariate(20.0)
        prompt = rng.randrange(64, 2000)
        kind = rng.randrange(3)
        out.append((t, SimRequest(
            f"r{i}", prompt, 1 if kind == 1 else rng.randrange(2, 100),
            remote_prefill_tokens=prompt if kind == 2 else 0, remote_decode=kind == 1,
        )))  # fmt: skip
    return out


def _replay(prof: Profile, work: list[tuple[float, SimRequest]]) -> list[tuple[float, ...]]:
    eng = Engine(prof)
    trace: list[tuple[float, ...]] = []
    for t, req in [*work, (float("inf"), None)]:
        while (nxt := eng.next_event_s()) is not None and nxt < t:
            res = eng.step(nxt, horizon_s=t)
            if res is None:
                break
            trace.append((res.start_s, res.end_s, res.num_steps, len(res.finished)))
        if req is not None:
            eng.add_request(req, t)
    return trace


def test_zero_terms_leave_the_engine_unchanged(base: Profile) -> None:
    """A profile without the terms, or declaring them as 0, steps exactly as before, even
    on a workload full of remote-KV and producer requests."""
    text = (PROFILES_DIR / f"{BASE}.csv").read_text()
    head, rest = text.split("\n", 1)
    zero = parse_profile(
        head + " kv_load_base_ms=0 kv_load_ms_per_token=0 kv_save_base_ms=0 decode_scale=1\n" + rest
    )
    assert not base.has_pd_terms and not zero.has_pd_terms
    work = _workload(1)
    ref = _replay(base, work)
    assert _replay(zero, work) == ref
    stripped = [(t, replace(r, remote_decode=False)) for t, r in work]
    assert _replay(base, stripped) == ref  # the flag alone costs nothing
    assert _replay(replace(base, kv_load_base_ms=10.0), work)[-1][1] > ref[-1][1]
