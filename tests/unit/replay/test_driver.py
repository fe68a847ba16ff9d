from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from controlplane.policy.request.admission import AdmissionContext
from controlplane.policy.types import Verdict
from controlplane.profiles import load_profile
from controlplane.replay.accounting import FAILED, OK, REJECTED
from controlplane.replay.cluster import ClusterShape
from controlplane.replay.driver import ReplayConfig, ReplayDriver, RunResult
from controlplane.replay.tenants import TenantMix, TenantShare, uniform_mix
from controlplane.replay.traces import Trace, TraceRequest
from controlplane.schemas import Priority, TenantSLA
from workers.sim import EngineConfig

H100 = load_profile("h100-llama3.1-8b")


def _trace(n: int, gap_s: float, prompt: int = 1000, out: int = 20, seed: int = 0) -> Trace:
    rng = random.Random(seed)
    t = 0.0
    reqs = []
    for i in range(n):
        reqs.append(TraceRequest(i, t, prompt + rng.randrange(0, 200), out + rng.randrange(0, 20)))
        t += gap_s
    return Trace("synthetic", tuple(reqs))


def _run(
    trace: Trace,
    policy: str = "round_robin",
    shape: ClusterShape | None = None,
    mix: TenantMix | None = None,
    **kw: object,
) -> RunResult:
    mix = mix or uniform_mix(2000, 50)
    cfg = ReplayConfig(policy=policy, shape=shape or ClusterShape(2, 2), profile=H100)
    cfg = replace(cfg, **kw)  # type: ignore[arg-type]
    return ReplayDriver(cfg, trace, mix.assign(len(trace.requests), 0), mix.slas).run()


def test_light_load_everything_meets_sla_and_ttft_matches_profile() -> None:
    tr = _trace(40, gap_s=1.0)
    res = _run(tr)
    assert all(o.status == OK and o.met for o in res.outcomes)
    for o, r in zip(res.outcomes, tr.requests, strict=True):
        assert o.ttft_s is not None and o.tpot_s is not None
        # prefill alone, then one decode step on the decode worker after the handoff
        lo = H100.prefill_ms(r.prompt_tokens) / 1000
        assert lo <= o.ttft_s <= lo + 0.02
        assert o.tpot_s == pytest.approx(H100.decode_ms(1, r.prompt_tokens) / 1000, rel=0.2)
    assert res.gpu_seconds == pytest.approx(4 * res.sim_end_s)


def test_round_robin_spreads_prefill_evenly() -> None:
    tr = _trace(40, gap_s=0.05)
    mix = uniform_mix()
    cfg = ReplayConfig(policy="round_robin", shape=ClusterShape(2, 2), profile=H100)
    drv = ReplayDriver(cfg, tr, mix.assign(40, 0), mix.slas)
    drv.run()
    steps = Counter({w: s.engine.stats.prompt_tokens_total for w, s in drv.slots.items()})
    assert steps["p0"] > 0 and steps["p1"] > 0
    assert abs(steps["p0"] - steps["p1"]) < 0.2 * (steps["p0"] + steps["p1"])


def test_deterministic() -> None:
    tr = _trace(200, gap_s=0.02)
    a = _run(tr, "sla")
    b = _run(tr, "sla")
    assert [(o.ttft_s, o.tpot_s) for o in a.outcomes] == [(o.ttft_s, o.tpot_s) for o in b.outcomes]


def test_overload_lowers_attainment() -> None:
    light = _run(_trace(300, gap_s=0.5))
    heavy = _run(_trace(300, gap_s=0.005, prompt=6000))
    att = [sum(o.met for o in r.outcomes) / 300 for r in (light, heavy)]
    assert att[0] == 1.0
    assert att[1] < 0.7


def test_unified_workers() -> None:
    res = _run(_trace(30, gap_s=0.5), shape=ClusterShape(workers=2))
    assert all(o.status == OK and o.met for o in res.outcomes)
    assert res.gpu_seconds == pytest.approx(2 * res.sim_end_s)


def test_kv_transfer_delay_adds_to_ttft() -> None:
    tr = _trace(10, gap_s=1.0)
    base = _run(tr)
    slow = _run(tr, engine=EngineConfig(kv_transfer_base_s=0.3))
    for a, b in zip(base.outcomes, slow.outcomes, strict=True):
        assert a.ttft_s is not None and b.ttft_s is not None
        assert b.ttft_s - a.ttft_s == pytest.approx(0.3, abs=0.01)


def test_too_long_requests_fail() -> None:
    tr = Trace("t", (TraceRequest(0, 0.0, 200_000, 10), TraceRequest(1, 0.1, 100, 10)))
    res = _run(tr)
    assert res.outcomes[0].status == FAILED and res.outcomes[0].reason == "exceeds_max_model_len"
    assert res.outcomes[1].status == OK


def test_prefix_hits_with_hash_ids() -> None:
    reqs = tuple(TraceRequest(i, i * 0.5, 4096, 5, (1, 2, 3, 4, 100 + i)) for i in range(6))
    res = _run(Trace("mc", reqs, 512), "kv_aware")
    cached = [o.cached_tokens for o in res.outcomes]
    assert cached[0] == 0
    assert all(c == 4 * 512 for c in cached[2:])  # after both prefill workers saw it


def test_rate_limit_rejects() -> None:
    sla = TenantSLA.model_validate({"tenant": "a", "rate_limit": {"rpm": 60}})
    mix = TenantMix((TenantShare(sla, 1.0),))
    res = _run(_trace(200, gap_s=0.01), mix=mix)
    statuses = Counter(o.status for o in res.outcomes)
    assert statuses[REJECTED] > 0 and statuses[OK] >= 60
    assert all(o.reason == "rate_limited" for o in res.outcomes if o.status == REJECTED)


PD_ONLY = {"local-prefill": {"mode": "never"}}
"""Admission tests overload the prefill pool on purpose: keep ``sla`` plain P/D, or local
prefill on the decode workers adds capacity and the overload is gone."""


def test_predictive_admission_sheds_lower_priority_under_overload() -> None:
    prem = TenantSLA(tenant="p", priority=Priority.PREMIUM, ttft_ms=500, itl_ms=50)
    batch = TenantSLA(tenant="b", priority=Priority.BATCH, ttft_ms=500, itl_ms=50)
    mix = TenantMix((TenantShare(prem, 0.5), TenantShare(batch, 0.5)))
    tr = _trace(400, gap_s=0.03, prompt=4000)
    on = _run(tr, "sla", mix=mix, router_params=PD_ONLY)
    off = _run(tr, "sla", mix=mix, admission=False, router_params=PD_ONLY)
    rej = [o for o in on.outcomes if o.status == REJECTED]
    assert rej and all(o.tenant == "b" for o in rej)
    assert not any(o.status == REJECTED for o in off.outcomes)

    def prem_att(r: RunResult) -> float:
        mine = [o for o in r.outcomes if o.tenant == "p"]
        return sum(o.met for o in mine) / len(mine)

    assert prem_att(on) > prem_att(off)


def test_priority_protection_keeps_premium_queue_short() -> None:
    """Batch meets its own loose target even behind a deep queue, so without protection
    it is admitted and premium (tight target) waits behind it; with protection the
    replay passes premium's active target into admission and batch is stopped: turned
    away (holding off) or held in the admission queue and fed to the engines as they
    drain (default), which serves batch too instead of dropping it."""
    prem = TenantSLA(tenant="p", priority=Priority.PREMIUM, ttft_ms=500, itl_ms=50)
    batch = TenantSLA(tenant="b", priority=Priority.BATCH, ttft_ms=60_000, itl_ms=500)
    mix = TenantMix((TenantShare(prem, 0.2), TenantShare(batch, 0.8)))
    tr = _trace(400, gap_s=0.03, prompt=4000)
    off = _run(
        tr, "sla", mix=mix, admission_params={"protect": {"enabled": False}}, router_params=PD_ONLY
    )
    rej = _run(
        tr, "sla", mix=mix, admission_params={"protect": {"hold": False}}, router_params=PD_ONLY
    )
    hold = _run(tr, "sla", mix=mix, router_params=PD_ONLY)
    assert not any(o.status == REJECTED for o in off.outcomes)
    turned = [o for o in rej.outcomes if o.status == REJECTED]
    assert turned and {o.tenant for o in turned} == {"b"}
    assert {o.reason for o in turned} == {"protect_higher_priority"}

    def att(r: RunResult, tenant: str) -> float:
        mine = [o for o in r.outcomes if o.tenant == tenant]
        return sum(o.met for o in mine) / len(mine)

    assert att(off, "p") < 0.5 < 0.9 < min(att(rej, "p"), att(hold, "p"))
    assert sum(o.status == REJECTED for o in hold.outcomes) < len(turned)
    assert att(hold, "b") > att(rej, "b")


def test_held_requests_leave_at_their_deadline() -> None:
    """A held request that cannot go before its own TTFT target is rejected then
    (``queue_timeout``), and no request is lost: every outcome is final."""
    prem = TenantSLA(tenant="p", priority=Priority.PREMIUM, ttft_ms=200, itl_ms=50)
    batch = TenantSLA(tenant="b", priority=Priority.BATCH, ttft_ms=1500, itl_ms=500)
    mix = TenantMix((TenantShare(prem, 0.5), TenantShare(batch, 0.5)))
    res = _run(_trace(300, gap_s=0.02, prompt=4000), "sla", mix=mix)
    reasons = Counter(o.reason for o in res.outcomes if o.status == REJECTED)
    assert reasons["queue_timeout"] > 0
    assert all(o.status in (OK, REJECTED) for o in res.outcomes)
    # holding serves premium first: only the batch class times out in the queue
    assert all(o.tenant == "b" for o in res.outcomes if o.reason == "queue_timeout")


def test_replay_passes_active_targets_to_admission() -> None:
    prem = TenantSLA(tenant="p", priority=Priority.PREMIUM, ttft_ms=500, itl_ms=50)
    batch = TenantSLA(tenant="b", priority=Priority.BATCH, ttft_ms=9000, itl_ms=500)
    mix = TenantMix((TenantShare(prem, 0.5), TenantShare(batch, 0.5)))
    tr = _trace(20, gap_s=0.5)
    cfg = ReplayConfig(policy="sla", shape=ClusterShape(1, 1), profile=H100)
    drv = ReplayDriver(cfg, tr, mix.assign(20, 0), mix.slas)
    seen: list[dict[int, float]] = []
    decide = drv.admission.decide

    def spy(ctx: AdmissionContext, now_s: float) -> Verdict:
        seen.append(dict(ctx.active_ttft_targets_ms_by_rank))
        return decide(ctx, now_s)

    drv.admission.decide = spy  # type: ignore[method-assign]
    drv.run()
    assert len(seen) == 20
    assert seen[-1] == {Priority.PREMIUM.rank: 500.0, Priority.BATCH.rank: 9000.0}


def test_held_requests_are_not_released_too_late_to_meet_their_target() -> None:
    """The replay passes the time a request has been held; a release that could no
    longer meet the request's TTFT target is refused instead of served late."""
    prem = TenantSLA(tenant="p", priority=Priority.PREMIUM, ttft_ms=300, itl_ms=50)
    batch = TenantSLA(tenant="b", priority=Priority.BATCH, ttft_ms=3000, itl_ms=500)
    mix = TenantMix((TenantShare(prem, 0.5), TenantShare(batch, 0.5)))
    res = _run(_trace(400, gap_s=0.02, prompt=4000), "sla", mix=mix)
    served = [o for o in res.outcomes if o.tenant == "b" and o.status == OK]
    assert served and sum(o.met for o in served) / len(served) > 0.95
    assert any(o.reason == "queue_timeout" for o in res.outcomes if o.tenant == "b")


@pytest.mark.parametrize("displace", [True, False])
def test_a_late_newcomer_displaces_a_larger_unstarted_request(displace: bool) -> None:
    """Same priority, different TTFT targets: the big request ahead would make its loose
    target, the small one behind it cannot make its tight one. Displacement refuses the
    big one (unstarted, so nothing is wasted) and serves the small one on time."""
    trace = Trace(
        "burst",
        (
            TraceRequest(0, 0.000, 3000, 4),  # starts at once: never a victim
            TraceRequest(1, 0.001, 6000, 4),  # queued behind it, target 1 s: on time
            TraceRequest(2, 0.002, 500, 4),  # target 150 ms: late behind request 1
        ),
    )
    slas = {
        "loose": TenantSLA(tenant="loose", ttft_ms=1000, itl_ms=50),
        "tight": TenantSLA(tenant="tight", ttft_ms=150, itl_ms=50),
    }
    cfg = ReplayConfig(
        policy="round_robin",
        shape=ClusterShape(1, 1),
        profile=H100,
        publish_interval_s=0.0,
        admission_params={"displace": {"enabled": displace}},
    )
    res = ReplayDriver(cfg, trace, ["loose", "loose", "tight"], slas).run()
    first, big, small = res.outcomes
    assert first.status == OK and first.met
    if displace:
        assert (big.status, big.reason) == (REJECTED, "displaced")
        assert small.status == OK and small.met
    else:
        assert big.status == OK and big.met
        assert (small.status, small.reason) == (REJECTED, "hopeless")


def test_hash_ids_cover_the_traces_block_not_the_engine_default() -> None:
    """A trace whose hash ids each stand for 256 tokens: the engines must cache 256 tokens
    per id (they assumed 512, which made the replay beat the capacity bound)."""
    reqs = tuple(TraceRequest(i, i * 0.5, 768, 4, hash_ids=(1, 2, 3)) for i in range(3))
    sla = TenantSLA(tenant="t", ttft_ms=60_000, itl_ms=1_000)
    cfg = ReplayConfig(policy="round_robin", shape=ClusterShape(0, 0, 1), profile=H100)
    drv = ReplayDriver(cfg, Trace("blocks256", reqs, block_tokens=256), ["t"] * 3, {"t": sla})
    assert drv.cfg.engine.hash_block_tokens == 256
    # the repeats hit two whole 256-token blocks (the last block is always computed); with
    # 512-token ids only one id would fit in 768 tokens, and that one is the last block
    assert [o.cached_tokens for o in drv.run().outcomes] == [0, 512, 512]
