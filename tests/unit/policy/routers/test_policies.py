"""Every routing policy against one table of situations (ties, KV full, stale, down)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from controlplane.policy.request.registry import POLICIES, RouterConfig, build_router
from controlplane.policy.types import ClusterView
from controlplane.schemas import WorkerSnapshot

from ..helpers import NOW_S, req, snap, view


@dataclass
class Case:
    name: str
    workers: list[WorkerSnapshot]
    expect: dict[str, set[str]]  # policy → allowed decode choices ("*" = any policy)
    view_kw: dict[str, Any] = field(default_factory=dict)
    fallback: bool = False


STALE = int((NOW_S - 10) * 1000)
ALL = {"*"}
CASES = [
    Case(
        "one worker down",
        [snap("a", up=False), snap("b")],
        {"*": {"b"}},
    ),
    Case(
        "stale telemetry counts as saturated",
        [snap("a", ts_ms=STALE), snap("b", running=50, waiting=10, kv_usage=0.5)],
        {"*": {"b"}},
    ),
    Case(
        "all stale falls back to all",
        [snap("a", ts_ms=STALE), snap("b", ts_ms=STALE)],
        {"*": {"a", "b"}},
        fallback=True,
    ),
    Case(
        "draining worker gets nothing new",
        [snap("a"), snap("b")],
        {"*": {"b"}},
        view_kw={"draining": frozenset({"a"})},
    ),
    Case(
        "route weight 0 removes a worker",
        [snap("a"), snap("b")],
        {"*": {"a"}},
        view_kw={"route_weights": {"b": 0.0}},
    ),
    Case(
        "KV full: only load-aware policies avoid it",
        [snap("a", kv_usage=0.99, running=1), snap("b", kv_usage=0.2, running=1)],
        {"least_loaded": {"a", "b"}, "round_robin": {"a", "b"}, "kv_aware": {"b"}, "sla": {"b"}},
    ),
    Case(
        "busy vs idle",
        [snap("a", running=30, waiting=8, kv_usage=0.6), snap("b", running=1, kv_usage=0.1)],
        {"least_loaded": {"b"}, "round_robin": {"a", "b"}, "kv_aware": {"b"}, "sla": {"b"}},
    ),
    Case(
        "static workers never go stale",
        [snap("a", ts_ms=0, source="static"), snap("b", ts_ms=STALE)],
        {"*": {"a"}},
    ),
]


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_policy_table(policy: str, case: Case) -> None:
    router = build_router(RouterConfig(policy=policy))
    v = view(*case.workers, **case.view_kw)
    allowed = case.expect.get(policy, case.expect.get("*", set()))
    for _ in range(4):  # several picks: rotation must stay inside the allowed set
        d = router.route(req(), v, NOW_S)
        assert d is not None
        assert d.mode == "unified" or d.mode == "pd"
        assert d.decode in allowed, (policy, d)
        assert bool(d.fallbacks) == case.fallback


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_ties_rotate_over_equal_workers(policy: str) -> None:
    router = build_router(RouterConfig(policy=policy))
    v = view(snap("a"), snap("b"), snap("c"))
    picks = [router.route(req(), v, NOW_S) for _ in range(6)]
    assert {d.decode for d in picks if d is not None} == {"a", "b", "c"}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_pd_pools_and_exclude(policy: str) -> None:
    router = build_router(RouterConfig(policy=policy))
    v = view(snap("p1", "prefill"), snap("p2", "prefill"), snap("d1", "decode"))
    d = router.route(req(), v, NOW_S, exclude={"p1"})
    assert d is not None and d.mode == "pd" and d.prefill == "p2" and d.decode == "d1"
    assert d.predicted_ttft_ms is not None and d.predicted_ttft_ms > 0
    half = router.route(req(), v, NOW_S, exclude={"p1", "p2"})
    assert half is not None and half.mode == "unified" and half.decode == "d1"
    assert router.route(req(), v, NOW_S, exclude={"p1", "p2", "d1"}) is None
    assert router.route(req(model="other"), v, NOW_S) is None


def test_both_pool_used_when_no_pd_pair() -> None:
    router = build_router(RouterConfig())
    v = view(snap("p1", "prefill"), snap("u1", "both"))
    d = router.route(req(), v, NOW_S)
    assert d is not None and d.mode == "unified" and d.decode == "u1" and d.prefill is None
    assert not d.fallbacks


def test_half_pair_serves_one_hop_and_records_it() -> None:
    router = build_router(RouterConfig())
    v = view(snap("p1", "prefill"), snap("d1", "decode"))
    d = router.route(req(), v, NOW_S, exclude={"p1"})
    assert d is not None and d.mode == "unified" and d.decode == "d1"
    assert "router:no_pd_pair" in d.fallbacks


def test_inflight_spreads_between_telemetry_samples() -> None:
    router = build_router(RouterConfig(policy="least_loaded"))
    v: ClusterView = view(snap("a"), snap("b"), inflight={"a": 3})
    assert all(router.route(req(), v, NOW_S).decode == "b" for _ in range(3))  # type: ignore[union-attr]


def test_sla_prefers_short_prefill_queue_and_low_itl() -> None:
    router = build_router(RouterConfig(policy="sla"))
    v = view(
        snap("p1", "prefill", waiting=4, waiting_tokens=8000),
        snap("p2", "prefill", waiting=1, waiting_tokens=200),
        snap("d1", "decode", running=8),
        snap("d2", "decode", running=1),
    )
    d = router.route(req(prompt=1000), v, NOW_S)
    assert d is not None and (d.prefill, d.decode) == ("p2", "d2")


def test_kv_aware_prefix_affinity_beats_balance() -> None:
    router = build_router(RouterConfig(policy="kv_aware"))
    hashes = tuple(range(1, 65))  # 64 blocks = 1024 tokens
    r = req(prompt=1024, block_hashes=hashes)
    v = view(snap("a", kv_usage=0.05), snap("b", kv_usage=0.0))
    first = router.route(r, v, NOW_S)
    assert first is not None and first.decode == "b"
    router.observe(r, first, v, NOW_S)
    v2 = view(snap("a", kv_usage=0.0), snap("b", kv_usage=0.004))  # 33 blocks < 64 cached
    again = router.route(r, v2, NOW_S)
    assert again is not None and again.decode == "b" and again.cached_tokens == 1024


def test_weights_scale_scores() -> None:
    router = build_router(RouterConfig(policy="sla"))
    v = view(snap("a"), snap("b"), route_weights={"a": 0.1, "b": 1.0})
    assert {router.route(req(), v, NOW_S).decode for _ in range(4)} == {"b"}  # type: ignore[union-attr]


def test_config_collects_every_error() -> None:
    cfg = RouterConfig(
        policy="nope", params={"kv-aware-scorer": {"overlap_weight": -1}, "bogus": {}}
    )
    with pytest.raises(ValueError) as ei:
        build_router(cfg)
    msg = str(ei.value)
    assert "unknown policy" in msg and "overlap_weight" in msg and "bogus" in msg
