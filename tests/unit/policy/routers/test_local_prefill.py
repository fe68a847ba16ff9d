"""Conditional disaggregation (``routers/local_prefill.py``) on constructed cluster states.

2 prefill + 2 decode workers with the H100 profile the replay uses; each case says
whether the request must stay P/D or be prefilled on a decode worker (mode "local").
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from controlplane.policy.predictor import ProfilePredictor
from controlplane.policy.request.registry import RouterConfig, build_router, validate_router_config
from controlplane.policy.request.routers.local_prefill import LocalPrefill, LocalPrefillParams
from controlplane.policy.request.routers.router import Router
from controlplane.policy.types import ClusterView, RouteDecision, RouteRequest
from workers.sim import load_profile

from ..helpers import NOW_S, req, snap, view

H100 = load_profile("h100-llama3.1-8b")
CAP = 400_000


def router(policy: str = "sla", **local: Any) -> Router:
    params = {"local-prefill": local} if local else {}
    return build_router(RouterConfig(policy=policy, params=params), ProfilePredictor(H100))


def cluster(
    prefill_queue: int = 0,
    d0: dict[str, Any] | None = None,
    d1: dict[str, Any] | None = None,
    **view_kw: Any,
) -> ClusterView:
    """Both prefill workers with ``prefill_queue`` tokens waiting; decode workers idle
    unless ``d0``/``d1`` say otherwise."""
    waiting = -(-prefill_queue // 2000)
    pre = [
        snap(w, "prefill", waiting_tokens=prefill_queue, waiting=waiting, kv_capacity_tokens=CAP)
        for w in ("p0", "p1")
    ]
    dec = [
        snap(w, "decode", kv_capacity_tokens=CAP, **(kw or {}))
        for w, kw in (("d0", d0), ("d1", d1))
    ]
    return view(*pre, *dec, **view_kw)


def request(prompt: int = 2000, max_tokens: int = 20, **kw: Any) -> RouteRequest:
    kw.setdefault("ttft_target_ms", 2000.0)
    kw.setdefault("itl_target_ms", 50.0)
    return req(prompt, max_tokens, **kw)


SATURATED = 200_000  # ~4 s of queue on each prefill worker at H100 prefill speed


def test_idle_prefill_pool_stays_pd() -> None:
    d = router().route(request(), cluster(0), NOW_S)
    assert d is not None and d.mode == "pd" and d.prefill in {"p0", "p1"}


def test_moderate_queue_under_risk_ratio_stays_pd() -> None:
    # ~0.3 s of queue: P/D well inside the 2 s target (under 0.25 x 2 s), local would
    # be faster but is not needed, so the decode workers are left alone
    d = router().route(request(), cluster(12_000), NOW_S)
    assert d is not None and d.mode == "pd"
    assert d.predicted_ttft_ms is not None and d.predicted_ttft_ms < 500
    d = router().route(request(), cluster(24_000), NOW_S)  # ~0.55 s: at risk, local
    assert d is not None and d.mode == "local"


def test_saturated_prefill_and_idle_decode_goes_local() -> None:
    r = router()
    pd = router(mode="never").route(request(), cluster(SATURATED), NOW_S)
    d = r.route(request(), cluster(SATURATED), NOW_S)
    assert pd is not None and pd.mode == "pd" and pd.predicted_ttft_ms is not None
    assert d is not None and d.mode == "local"
    assert d.prefill is None and d.decode in {"d0", "d1"} and d.workers() == (d.decode,)
    assert d.predicted_ttft_ms is not None and d.predicted_ttft_ms < 0.1 * pd.predicted_ttft_ms
    assert d.predicted_itl_ms is not None and d.predicted_itl_ms <= 0.8 * 50
    assert "local-prefill predictive" in d.reason


def test_local_prompt_counts_where_it_went() -> None:
    """observe() records the prompt's blocks on the decode worker (it now holds them)."""
    r = router()
    rq = request(block_hashes=(11, 12, 13))
    v = cluster(SATURATED)
    d = r.route(rq, v, NOW_S)
    assert d is not None and d.mode == "local"
    r.observe(rq, d, v, NOW_S)
    assert r.index.overlap(rq.block_hashes) == {d.decode: 3}


def test_decode_near_itl_limit_stays_pd() -> None:
    # 200 running at 25 ms target: the decode step alone is ~27 ms > 0.8 x 25
    busy = {"running": 200}
    d = router().route(request(itl_target_ms=25.0), cluster(SATURATED, d0=busy, d1=busy), NOW_S)
    assert d is not None and d.mode == "pd"
    # the same load with a 50 ms target has room: local
    d = router().route(request(), cluster(SATURATED, d0=busy, d1=busy), NOW_S)
    assert d is not None and d.mode == "local"


def test_stall_spread_over_short_outputs_stays_pd() -> None:
    # an 8k prompt stalls each running decode ~200 ms; spread over 2 tokens' one gap
    # that is a TPOT miss for whoever decodes there, so it stays P/D
    d = router(spread_tokens=2).route(request(8000, 20), cluster(SATURATED), NOW_S)
    assert d is not None and d.mode == "pd"
    d = router(spread_tokens=64).route(request(8000, 20), cluster(SATURATED), NOW_S)
    assert d is not None and d.mode == "local"


def test_kv_full_decode_stays_pd() -> None:
    full = {"kv_usage": 0.95}
    d = router().route(request(), cluster(SATURATED, d0=full, d1=full), NOW_S)
    assert d is not None and d.mode == "pd"


def test_kv_room_for_prompt_plus_max_tokens() -> None:
    # 0.89 used of 400k below the 0.9 cap leaves 4k tokens: a 2k prompt fits, 2k + 4k not
    tight = {"kv_usage": 0.89}
    d = router().route(request(2000, 20), cluster(SATURATED, d0=tight, d1=tight), NOW_S)
    assert d is not None and d.mode == "local"
    d = router().route(request(2000, 4000), cluster(SATURATED, d0=tight, d1=tight), NOW_S)
    assert d is not None and d.mode == "pd"


def test_picks_the_decode_worker_that_can_take_it() -> None:
    d = router().route(request(), cluster(SATURATED, d0={"kv_usage": 0.95}), NOW_S)
    assert d is not None and d.mode == "local" and d.decode == "d1"
    # the one with local prefill already queued loses to the idle one
    v = cluster(SATURATED, pending_prefill_tokens={"d1": 30_000})
    d = router().route(request(), v, NOW_S)
    assert d is not None and d.mode == "local" and d.decode == "d0"


def test_local_too_slow_for_target_stays_pd() -> None:
    # 60k-token prompt: ~2.5 s to prefill anywhere, above 0.9 x 2 s, so local cannot save it
    d = router().route(request(60_000, 20, itl_target_ms=500.0), cluster(SATURATED), NOW_S)
    assert d is not None and d.mode == "pd"


def test_burst_spreads_and_then_stops() -> None:
    """Local prefills count as pending tokens on their decode worker (as the drivers
    track them) and in the worker's recent-prefill level, so a burst does not pile onto
    one decode worker and stops going local once the decode side is full."""
    r = router()
    pending: dict[str, int] = {}
    got: list[str] = []
    for i in range(40):
        rq = replace(request(4000, 20), request_id=f"b{i}")
        v = cluster(SATURATED, pending_prefill_tokens=pending)
        d = r.route(rq, v, NOW_S)
        assert d is not None
        r.observe(rq, d, v, NOW_S)
        got.append(d.mode if d.mode == "pd" else d.decode)
        if d.prefill is None:
            pending[d.decode] = pending.get(d.decode, 0) + rq.prompt_tokens
    locals_ = [g for g in got if g != "pd"]
    assert got[:2] in (["d0", "d1"], ["d1", "d0"])  # one each before any doubling up
    assert 2 < len(locals_) < 40 and got[-1] == "pd"
    assert abs(locals_.count("d0") - locals_.count("d1")) <= 1


def test_duty_cycle_limits_local_after_the_queue_drained() -> None:
    """Sent local prefill finished (no pending tokens), yet the worker spent most of
    the last window prefilling: its decodes are already slow, so stay P/D; after a few
    windows it has recovered."""
    r = router(spread_tokens=512, window_ms=500.0)
    lp = r.local
    assert lp is not None
    for w in ("d0", "d1"):
        lp._level[w] = (450.0, NOW_S)  # 450 ms of prefill in the last ~500 ms
    d = r.route(request(), cluster(SATURATED), NOW_S)
    assert d is not None and d.mode == "pd"
    d = r.route(request(), cluster(SATURATED), NOW_S + 3.0)
    assert d is not None and d.mode == "local"


def test_tightest_recent_itl_target_on_the_worker_counts() -> None:
    r = router()
    v = cluster(SATURATED, d0={"running": 150}, d1={"running": 150})
    # a 25 ms-ITL request was just sent to each decode worker
    sent = set()
    for i in range(2):
        premium = replace(request(itl_target_ms=25.0), request_id=f"p{i}")
        quiet = cluster(0)
        d = r.route(premium, quiet, NOW_S)
        assert d is not None
        r.observe(premium, d, quiet, NOW_S)
        sent.add(d.decode)
    assert sent == {"d0", "d1"}
    d = r.route(request(itl_target_ms=100.0), v, NOW_S)
    assert d is not None and d.mode == "pd"  # ~19 ms steps + stall > 0.8 x 25
    d = router().route(request(itl_target_ms=100.0), v, NOW_S)
    assert d is not None and d.mode == "local"  # nobody tight there


def test_tie_with_pd_stays_pd() -> None:
    r = router(min_gain=0.0, risk_ratio=0.0)
    lp = r.local
    assert lp is not None
    rq, v = request(), cluster(SATURATED)
    pd = router(mode="never").route(rq, v, NOW_S)
    assert pd is not None
    got = lp.decide(rq, v, pd, ["d0", "d1"], ["p0", "p1"], NOW_S)
    assert got is not None and got.predicted_ttft_ms is not None
    same = replace(pd, decode=got.worker, predicted_ttft_ms=got.predicted_ttft_ms)
    assert lp.decide(rq, v, same, ["d0", "d1"], ["p0", "p1"], NOW_S) is None
    faster = replace(same, predicted_ttft_ms=got.predicted_ttft_ms * 1.0001)
    assert lp.decide(rq, v, faster, ["d0", "d1"], ["p0", "p1"], NOW_S) is not None


def test_tie_between_decode_workers_keeps_the_decode_pick() -> None:
    r, pd = router(), router(mode="never")
    got = []
    for _ in range(4):  # nothing observed: the decode workers stay identical
        expect = pd.route(request(), cluster(SATURATED), NOW_S)
        d = r.route(request(), cluster(SATURATED), NOW_S)
        assert d is not None and expect is not None and d.mode == "local"
        assert d.decode == expect.decode
        got.append(d.decode)
    assert got == ["d0", "d1", "d0", "d1"]  # the decode profile's rotating tie-break


def test_not_clearly_faster_stays_pd() -> None:
    # both decode workers hold ~0.9 of the prefill workers' queue: local is faster, but
    # by less than min_gain (10 %), so the decode side is not disturbed for it
    pend = {"d0": 55_000, "d1": 55_000}
    d = router(spread_tokens=10_000, window_ms=1e6).route(
        request(itl_target_ms=1000.0), cluster(60_000, pending_prefill_tokens=pend), NOW_S
    )
    assert d is not None and d.mode == "pd"
    d = router(spread_tokens=10_000, window_ms=1e6, min_gain=0.0).route(
        request(itl_target_ms=1000.0), cluster(60_000, pending_prefill_tokens=pend), NOW_S
    )
    assert d is not None and d.mode == "local"


# ---- threshold (Dynamo) and never ----


def test_threshold_short_prompt_local_even_when_idle() -> None:
    d = router(mode="threshold").route(request(800), cluster(0), NOW_S)
    assert d is not None and d.mode == "local" and d.prefill is None
    assert "uncached 800 <= 1000" in d.reason
    assert d.predicted_ttft_ms is not None and d.predicted_ttft_ms > 0


def test_threshold_long_prompt_remote_unless_queue() -> None:
    d = router(mode="threshold").route(request(3000), cluster(0), NOW_S)
    assert d is not None and d.mode == "pd"
    # 1 waiting request per prefill worker: pool queue 2 >= max_prefill_queue_size 2
    d = router(mode="threshold").route(request(3000), cluster(2000), NOW_S)
    assert d is not None and d.mode == "local" and "prefill queue 2 >= 2" in d.reason
    d = router(mode="threshold", max_prefill_queue_size=None).route(
        request(3000), cluster(SATURATED), NOW_S
    )
    assert d is not None and d.mode == "pd"


def test_threshold_counts_only_uncached_tokens_on_the_decode_worker() -> None:
    r = router(mode="threshold", max_prefill_queue_size=None)
    rq = request(3000, block_hashes=tuple(range(150)))  # 150 blocks x 16 = 2400 cached
    r.index.record("d0", rq.block_hashes)
    r.index.record("d1", rq.block_hashes)
    d = r.route(rq, cluster(0), NOW_S)
    assert d is not None and d.mode == "local" and d.cached_tokens == 2400


def test_threshold_on_a_baseline_policy() -> None:
    d = router("kv_aware", mode="threshold").route(request(500), cluster(0), NOW_S)
    assert d is not None and d.mode == "local" and d.policy == "kv_aware"


@pytest.mark.parametrize("policy", ["round_robin", "least_loaded", "kv_aware"])
def test_baselines_default_to_never(policy: str) -> None:
    r = router(policy)
    assert r.local is None
    d = r.route(request(500), cluster(SATURATED), NOW_S)
    assert d is not None and d.mode == "pd"


def test_never_mode_on_sla() -> None:
    r = router(mode="never")
    assert r.local is None
    d = r.route(request(), cluster(SATURATED), NOW_S)
    assert d is not None and d.mode == "pd"


def test_no_pd_pair_is_still_unified_fallback() -> None:
    v = view(snap("d0", "decode", kv_capacity_tokens=CAP))
    d = router().route(request(), v, NOW_S)
    assert d is not None and d.mode == "unified" and "router:no_pd_pair" in d.fallbacks


def test_config_validation() -> None:
    out = validate_router_config(RouterConfig(params={"local-prefill": {"mode": "threshold"}}))
    assert isinstance(out["local-prefill"], LocalPrefillParams)
    with pytest.raises(ValueError, match=r"local-prefill\.mode"):
        validate_router_config(RouterConfig(params={"local-prefill": {"mode": "sometimes"}}))
    with pytest.raises(ValueError, match=r"local-prefill\.bogus"):
        validate_router_config(RouterConfig(params={"local-prefill": {"bogus": 1}}))


def test_spread_learned_from_recent_max_tokens() -> None:
    lp = LocalPrefill(
        LocalPrefillParams(), "predictive", predictor=ProfilePredictor(H100),
        index=router().index,
    )  # fmt: skip
    assert lp.spread(request(max_tokens=300)) == 300  # nothing seen yet: the request's own
    for i in range(200):
        rq = replace(request(max_tokens=10 if i % 2 else 400), request_id=str(i))
        lp.commit(rq, RouteDecision("sla", "pd", decode="d0", prefill="p0"), view(), NOW_S)
    assert lp.spread(request(max_tokens=300)) == 10  # the 25th percentile


# ---- the replay driver runs local decisions end to end ----


def _replay(mode: str) -> tuple[list[Any], Any]:
    from controlplane.replay.accounting import OK
    from controlplane.replay.cluster import ClusterShape
    from controlplane.replay.driver import ReplayConfig, ReplayDriver
    from controlplane.replay.tenants import uniform_mix
    from controlplane.replay.traces import Trace, TraceRequest

    # 4k-token prompts every 40 ms: ~2.2x what two prefill workers can take, short outputs
    reqs = tuple(TraceRequest(i, i * 0.04, 4000 + 37 * (i % 7), 12) for i in range(300))
    mix = uniform_mix(1000, 50)
    cfg = ReplayConfig(
        policy="sla", shape=ClusterShape(2, 2), profile=H100,
        router_params={"local-prefill": {"mode": mode}},
        admission_params={"predictive": {"shed_hopeless": False}},  # routing alone
    )  # fmt: skip
    drv = ReplayDriver(cfg, Trace("t", reqs), mix.assign(len(reqs), 0), mix.slas)
    res = drv.run()
    assert all(o.status == OK for o in res.outcomes)
    return res.outcomes, drv


def test_replay_local_prefill_adds_capacity_and_balances_its_books() -> None:
    never, _ = _replay("never")
    pred, drv = _replay("predictive")
    att_never = sum(o.met for o in never) / len(never)
    att_pred = sum(o.met for o in pred) / len(pred)
    assert att_never < 0.5 < 0.9 < att_pred
    # every local prefill's pending tokens and in-flight count were given back
    assert all(v == 0 for v in drv.ledger.pending_prefill_tokens.values())
    assert all(v == 0 for v in drv.ledger.inflight.values())
    # and the decode workers' TPOT stayed under the 50 ms target
    assert max(o.tpot_s or 0.0 for o in pred) * 1000 < 50
