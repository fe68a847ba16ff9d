from __future__ import annotations

import pytest

from controlplane.profiles import parse_profile
from controlplane.replay.capacity import capacity_bound, peak_prefill_tokens_per_ms, uncached_tokens
from controlplane.replay.traces import TraceRequest
from controlplane.schemas import TenantSLA

# Prefill: 10 tok/ms at 100 tokens, 20 tok/ms at the 1000-token budget; decode: 10 ms/step
# for any batch up to 8, so the per-token decode cost within a 50 ms ITL is 10/8 ms.
PROFILE = parse_profile(
    "# slaplane-profile name=t kv_capacity_tokens=100000 block_size=10 "
    "max_num_batched_tokens=1000 max_num_seqs=8 max_model_len=10000\n"
    "phase,batch_size,context_tokens_or_prompt_tokens,latency_ms\n"
    "prefill,1,100,10\nprefill,1,1000,50\ndecode,1,100,10\ndecode,8,100,10\n"
)
SLA = TenantSLA(tenant="a", ttft_ms=1000, itl_ms=50)


def _reqs(n: int, prompt: int = 1000, out: int = 11) -> list[TraceRequest]:
    return [TraceRequest(i, float(i), prompt, out) for i in range(n)]


def test_peak_prefill() -> None:
    assert peak_prefill_tokens_per_ms(PROFILE) == pytest.approx(20.0)


def test_pd_bound_by_hand() -> None:
    reqs = _reqs(10)
    cap = capacity_bound(reqs, [SLA] * 10, PROFILE, prefill=1, decode=1, local_prefill=False)
    assert cap.mean_prefill_gpu_ms == pytest.approx(50.0)
    assert cap.mean_decode_gpu_ms == pytest.approx(10 * 10 / 8)
    assert cap.prefill_rps == pytest.approx(20.0)
    assert cap.decode_rps == pytest.approx(80.0)
    assert cap.capacity_rps == pytest.approx(20.0)
    assert cap.feasible_ratio == 1.0
    more = capacity_bound(reqs, [SLA] * 10, PROFILE, prefill=3, decode=1, local_prefill=False)
    assert more.capacity_rps == pytest.approx(60.0)  # still prefill-bound, 3x
    # Mixed: a decode step's fixed 10 ms is paid once per step, so beside decodes a
    # prompt costs prefill_ms - 10 (cheapest cut: 900 tokens in a full 992-token step,
    # the last 100 free) = 35.97 ms, + 12.5 ms of decode < 50 ms of prefill alone.
    mixed = capacity_bound(reqs, [SLA] * 10, PROFILE, workers=2)
    beside = 900 * (40 * 892 / 900) / 992  # prefill_ms(992) - 10 = 40 x 892 / 900
    assert mixed.mean_prefill_beside_decode_gpu_ms == pytest.approx(beside)
    assert mixed.capacity_rps == pytest.approx(2000.0 / 50.0)
    free = capacity_bound(reqs, [SLA] * 10, PROFILE, gpu_budget=4)
    assert free.capacity_rps == pytest.approx(4000.0 / 50.0)


def test_tight_itl_lowers_decode_capacity() -> None:
    reqs = _reqs(4)
    tight = TenantSLA(tenant="a", ttft_ms=1000, itl_ms=9.5)  # even batch 1 misses
    cap = capacity_bound(reqs, [tight] * 4, PROFILE, prefill=1, decode=1)
    assert cap.feasible_ratio == 0.0 and cap.capacity_rps == 0.0


def test_infeasible_ttft_excluded() -> None:
    reqs = [*_reqs(2), TraceRequest(2, 2.0, 100, 11)]
    strict = TenantSLA(tenant="a", ttft_ms=20, itl_ms=50)
    cap = capacity_bound(reqs, [strict] * 3, PROFILE, prefill=1, decode=1)
    assert cap.feasible_ratio == pytest.approx(1 / 3)
    assert cap.mean_prefill_gpu_ms == pytest.approx(100 / 20)
    assert cap.sweep_bound_scale(1.0) == 0.0  # < 90 % feasible: no rate is enough


def test_prefix_reuse() -> None:
    reqs = [
        TraceRequest(0, 0.0, 1000, 2, (1, 2, 3)),
        TraceRequest(1, 1.0, 1000, 2, (1, 2, 9)),
        TraceRequest(2, 2.0, 300, 2, (1, 2, 3)),
    ]
    assert uncached_tokens(reqs, 300) == [1000, 400, 1]
    assert uncached_tokens(reqs, 0) == [1000, 1000, 300]


def test_sweep_bound_scale() -> None:
    cap = capacity_bound(_reqs(10), [SLA] * 10, PROFILE, prefill=1, decode=1, local_prefill=False)
    assert cap.fluid_bound_scale(2.0) == pytest.approx(20.0 / (0.9 * 2.0))


# ---- burst-aware bound ----


def _brute_on_time(r: list[float], p: list[float], slack: float) -> int:
    """Most jobs a single server finishes by r + slack: with one slack the deadlines
    follow the arrivals, so some optimal schedule runs the kept set in arrival order."""
    best = 0
    for mask in range(1 << len(r)):
        c, ok, k = -1e18, True, 0
        for i in range(len(r)):
            if mask >> i & 1:
                c, k = max(c, r[i]) + p[i], k + 1
                if c > r[i] + slack + 1e-9:
                    ok = False
                    break
        if ok:
            best = max(best, k)
    return best


def test_prefill_on_time_is_the_exact_optimum_of_the_pooled_server() -> None:
    import random

    import numpy as np

    from controlplane.replay.capacity import _prefill_on_time

    rng = random.Random(7)
    for _ in range(400):
        n = rng.randint(1, 9)
        r = sorted(rng.uniform(0, 10) for _ in range(n))
        p = [rng.choice([0.2, 1.0, 3.0]) * rng.random() * 2 for _ in range(n)]
        slack = rng.uniform(0.5, 6)
        assert _prefill_on_time(np.array(r), np.array(p), slack) == _brute_on_time(r, p, slack)


def test_a_burst_one_prefill_server_cannot_serve() -> None:
    # 10 requests at once, 50 ms of prefill each (1000 tokens at 20 tok/ms), TTFT 200 ms:
    # one server finishes 4 by the deadline whatever the order. The fluid bound sees
    # 10 requests in a 9-s trace = 1.1 req/s against 20 req/s of capacity.
    reqs = [TraceRequest(i, 0.0, 1000, 11) for i in range(10)] + [TraceRequest(10, 9.0, 1, 2)]
    sla = TenantSLA(tenant="a", ttft_ms=200, itl_ms=50)
    cap = capacity_bound(reqs, [sla] * 11, PROFILE, prefill=1, decode=1, local_prefill=False)
    assert cap.fluid_bound_scale(cap.base_rps) > 10
    assert cap.burst_met(1.0) == 5  # 4 of the burst + the lone short one
    assert cap.burst_attainment(1.0) == pytest.approx(5 / 11)
    assert cap.sweep_bound_scale(cap.base_rps) == 0.0  # no rate makes the burst fit
    two = capacity_bound(reqs, [sla] * 11, PROFILE, prefill=2, decode=1, local_prefill=False)
    assert two.burst_met(1.0) == 9  # pooled 2 GPUs: 8 of the burst


def test_idle_trace_bound_is_the_offered_rate() -> None:
    reqs = _reqs(10)  # one 50-ms request per second
    tight = TenantSLA(tenant="a", ttft_ms=200, itl_ms=50)
    cap = capacity_bound(reqs, [tight] * 10, PROFILE, prefill=1, decode=1, local_prefill=False)
    assert cap.burst_attainment(1.0) == 1.0
    assert cap.goodput_bound_rps(1.0) == pytest.approx(10 / 9)  # = offered (10 over 9 s)
    # far past the server's speed only 4 fit (200 ms / 50 ms), and the sweep finds where
    assert cap.burst_attainment(1000.0) == pytest.approx(0.4)
    scale = cap.sweep_bound_scale(cap.base_rps)
    a = cap.burst_attainment(scale)
    assert a is not None and a >= 0.9
    b = cap.burst_attainment(scale * 1.05)
    assert b is not None and b < 0.9


def test_oversized_requests_are_infeasible() -> None:
    reqs = [*_reqs(9), TraceRequest(9, 9.0, 9995, 11)]  # prompt + output > max_model_len
    cap = capacity_bound(reqs, [SLA] * 10, PROFILE, prefill=1, decode=1)
    assert cap.feasible_ratio == pytest.approx(0.9)
    assert cap.burst_met(1.0) == 9


def test_decode_side_binds_when_decode_is_short() -> None:
    # 10 long outputs at once on one decode GPU: each needs 999 tokens x 10/8 ms and
    # must finish within TTFT + 999 x ITL ≈ 51 s; together 12.5 s of decode work: fits.
    # Mixed workers share their GPUs between the two pools.
    reqs = [TraceRequest(i, 0.0, 100, 1000) for i in range(10)]
    cap = capacity_bound(reqs, [SLA] * 10, PROFILE, prefill=1, decode=1)
    assert cap.burst_met(1.0) == 10
    mixed = capacity_bound(reqs, [SLA] * 10, PROFILE, workers=1)
    assert mixed.burst is not None and mixed.burst.shared
    assert mixed.burst_met(1.0) == 10
    j = cap.to_json()
    assert j["burst"]["attainment_at_1x"] == 1.0 and "fluid_bound_rate_scale" in j


def test_local_prefill_lets_decode_gpus_prefill() -> None:
    """Step 9: with conditional disaggregation a decode GPU may prefill, so the P/D
    bound pools all N + M GPUs for prefill (decode keeps its M, and both together fit
    in N + M): never below the pure P/D bound, never above a free split of N + M."""
    reqs = _reqs(10)
    pd = capacity_bound(reqs, [SLA] * 10, PROFILE, prefill=1, decode=1, local_prefill=False)
    lp = capacity_bound(reqs, [SLA] * 10, PROFILE, prefill=1, decode=1)
    free = capacity_bound(reqs, [SLA] * 10, PROFILE, gpu_budget=2)
    # (N + M) / max(prefill alone, prefill beside decode + decode): 50 vs 35.97 + 12.5 ms
    assert lp.capacity_rps == pytest.approx(2000.0 / 50.0)
    assert pd.capacity_rps < lp.capacity_rps <= free.capacity_rps
    # the burst one prefill server cannot serve: two GPUs can prefill it together
    burst = [TraceRequest(i, 0.0, 1000, 11) for i in range(10)] + [TraceRequest(10, 9.0, 1, 2)]
    sla = TenantSLA(tenant="a", ttft_ms=200, itl_ms=50)
    one = capacity_bound(burst, [sla] * 11, PROFILE, prefill=1, decode=1, local_prefill=False)
    both = capacity_bound(burst, [sla] * 11, PROFILE, prefill=1, decode=1)
    assert (one.burst_met(1.0), both.burst_met(1.0)) == (5, 9)
    assert both.shape.endswith("local prefill")
