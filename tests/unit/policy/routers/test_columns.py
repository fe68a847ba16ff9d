"""The vectorised, version-cached routing path picks exactly what the per-worker path picks.

Each plugin keeps its per-snapshot reference implementation (``filter_slow`` and
the dict-returning ``score``); a reference router built from wrappers that expose
only those runs beside the normal router over random clusters whose telemetry,
control, counters, clock and prefix index change between requests.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from controlplane.policy.predictor import ProfilePredictor
from controlplane.policy.request.registry import POLICIES, RouterConfig, build_router
from controlplane.policy.request.routers.base import Profile
from controlplane.policy.request.routers.router import Router
from controlplane.policy.types import Candidates, ClusterView, RouteRequest, build_pools
from controlplane.profiles import CPU_TINY_FIXTURE, load_profile
from controlplane.profiles import Profile as LatencyProfile
from controlplane.schemas import WorkerSnapshot

from ..helpers import NOW_S


class _SlowFilter:
    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.type_name = inner, inner.name, inner.type_name

    def filter(self, req: RouteRequest, workers: Candidates, now_s: float) -> list[str]:
        out: list[str] = self.inner.filter_slow(req, workers, now_s)
        return out


class _SlowScorer:
    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.type_name = inner, inner.name, inner.type_name

    def score(self, req: RouteRequest, workers: Candidates, now_s: float) -> dict[str, float]:
        out: dict[str, float] = self.inner.score(req, workers, now_s)
        return out


def _slow(p: Profile) -> Profile:
    return Profile(
        p.name, [_SlowFilter(f) for f in p.filters], [(_SlowScorer(s), w) for s, w in p.scorers]
    )


def _routers(
    policy: str, predictor: ProfilePredictor, params: dict[str, dict[str, Any]] | None = None
) -> tuple[Router, Router]:
    cfg = RouterConfig(policy=policy, params=params or {})
    fast = build_router(cfg, predictor)
    ref = build_router(cfg, predictor)
    ref.prefill, ref.decode, ref.unified = _slow(ref.prefill), _slow(ref.decode), _slow(ref.unified)
    return fast, ref


def _snap(rng: random.Random, i: int, now_s: float) -> WorkerSnapshot:
    role = rng.choice(["prefill", "decode", "both"])
    return WorkerSnapshot(
        "c", f"w{i}", role, rng.choice(["m", "m", "m2"]),
        up=rng.random() > 0.05, kv_usage=rng.choice([0.0, 0.5, 0.98, rng.random()]),
        running=rng.randint(0, 12), waiting=rng.randint(0, 4),
        waiting_tokens=rng.choice([None, rng.randint(0, 4000)]),
        kv_capacity_tokens=rng.choice([None, 4096, 200_000]),
        ts_ms=int((now_s - rng.choice([0.1, 0.5, 1.9, 2.1, 5.0])) * 1000),
        source=rng.choice(["agent"] * 9 + ["static"]),
    )  # fmt: skip


@pytest.mark.parametrize("profiles", ["default", "per-worker", "scaled-default"])
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("n", [6, 40, 121, 300, 1000])
def test_fast_path_matches_reference(policy: str, n: int, profiles: str) -> None:
    """Pools under 16 take the per-worker path, 16-127 the list path (``score_list``),
    larger ones the numpy path (``score_columns``): n=121/300 and n=1000 cover both.
    Profiles with ``decode_scale`` check that the row paths apply it as ``decode_ms``."""
    rng = random.Random(n)
    other = LatencyProfile.from_points([(64, 5.0), (2048, 90.0)], [(1, 128, 1.0), (8, 1024, 6.0)])
    other = replace(other, decode_scale=1.3)
    if profiles == "scaled-default":
        predictor = ProfilePredictor(replace(CPU_TINY_FIXTURE, decode_scale=1.7))
    else:
        per_worker = {"m2": other, "w3": other} if profiles == "per-worker" else {}
        predictor = ProfilePredictor(profiles=per_worker)
    # in-flight KV tokens in the kv-room filter on odd sizes (its per-request branch)
    params = {"kv-room-filter": {"assumed_tokens_per_request": 64}} if n % 2 else None
    fast, ref = _routers(policy, predictor, params)
    now = NOW_S
    ws = {f"w{i}": _snap(rng, i, now) for i in range(n)}
    inflight: dict[str, int] = {}
    pending: dict[str, int] = {}
    version = 0
    draining: frozenset[str] = frozenset()
    weights: dict[str, float] = {}
    prefixes = [tuple(rng.randrange(1 << 30) for _ in range(40)) for _ in range(4)]
    pools = build_pools(ws)
    for step in range(120):
        if step % 7 == 0:  # telemetry / control arrives: new version
            version += 1
            for _ in range(max(1, n // 5)):
                i = rng.randrange(n)
                old = ws[f"w{i}"]  # same pool membership: pool lists are reused across versions
                ws[f"w{i}"] = replace(_snap(rng, i, now), role=old.role, model=old.model)
            draining = frozenset(rng.sample(sorted(ws), min(2, n))) if step % 3 else frozenset()
            weights = {f"w{rng.randrange(n)}": rng.choice([0.0, 0.3, 2.0])} if step % 2 else {}
        view = ClusterView(
            ws, weights, draining, inflight=inflight, pending_prefill_tokens=pending,
            pools=pools, version=version,
        )  # fmt: skip
        now += rng.choice([0.0, 0.01, 0.3])
        h = rng.choice(prefixes)[: rng.randint(0, 40)]
        prompt = len(h) * 16 + rng.randint(1, 900)
        model = rng.choice(["m", "m2"])
        req = RouteRequest(f"r{step}", "t", model, prompt, rng.randint(1, 3000), block_hashes=h)
        exclude = {f"w{rng.randrange(n)}"} if step % 11 == 0 else set()
        a = fast.route(req, view, now, exclude)
        b = ref.route(req, view, now, exclude)
        assert a == b, (step, a, b)
        if a is not None:
            fast.observe(req, a, view, now)
            ref.observe(req, a, view, now)
            for w in a.workers():
                inflight[w] = inflight.get(w, 0) + rng.randint(0, 3)
                pending[w] = pending.get(w, 0) + rng.randint(0, 500)


def test_unversioned_view_is_never_cached() -> None:
    """A driver that mutates its view in place without a version sees every change."""
    router = build_router(RouterConfig(policy="least_loaded"))
    ws = {
        "a": WorkerSnapshot("c", "a", "both", "m", ts_ms=int(NOW_S * 1000)),
        "b": WorkerSnapshot("c", "b", "both", "m", ts_ms=int(NOW_S * 1000), running=5),
    }
    view = ClusterView(ws, pools=build_pools(ws))
    req = RouteRequest("r", "t", "m", 10, 10)
    assert router.route(req, view, NOW_S).decode == "a"  # type: ignore[union-attr]
    ws["a"] = replace(ws["a"], running=9)
    assert router.route(req, view, NOW_S).decode == "b"  # type: ignore[union-attr]
    view.draining = frozenset({"b"})
    assert router.route(req, view, NOW_S).decode == "a"  # type: ignore[union-attr]


def test_health_cache_follows_the_clock_within_a_version() -> None:
    router = build_router(RouterConfig(policy="least_loaded"))
    ws = {
        "a": WorkerSnapshot("c", "a", "both", "m", ts_ms=int(NOW_S * 1000)),
        "b": WorkerSnapshot("c", "b", "both", "m", ts_ms=int(NOW_S * 1000) - 1500, running=5),
    }
    view = ClusterView(ws, pools=build_pools(ws), version=1, stale_after_s=2.0)
    req = RouteRequest("r", "t", "m", 10, 10)
    assert router.route(req, view, NOW_S).decode == "a"  # type: ignore[union-attr]
    d = router.route(req, view, NOW_S + 1.0)  # "b" is stale now, "a" still fresh
    assert d is not None and d.decode == "a" and not d.fallbacks
    ws2 = {"b": ws["b"], "a": replace(ws["a"], ts_ms=int(NOW_S * 1000) - 1500)}
    view2 = ClusterView(ws2, pools=build_pools(ws2), version=2)
    d2 = router.route(req, view2, NOW_S + 1.0)  # both stale: fallback to both
    assert d2 is not None and d2.fallbacks


def test_stale_worker_that_reports_again_is_back_in_the_next_version() -> None:
    """The health answer survives versions with only fresher load numbers, but not a
    report from a worker it had dropped as stale."""
    router = build_router(RouterConfig(policy="least_loaded"))
    now_ms = int(NOW_S * 1000)
    ws = {
        f"w{i}": WorkerSnapshot("c", f"w{i}", "both", "m", ts_ms=now_ms, running=5)
        for i in range(20)
    }
    ws["w0"] = replace(ws["w0"], ts_ms=now_ms - 10_000, running=0)  # stale, idle
    pools = build_pools(ws)
    req = RouteRequest("r", "t", "m", 10, 10)
    d1 = router.route(req, ClusterView(ws, pools=pools, version=1), NOW_S)
    assert d1 is not None and d1.decode != "w0"
    ws["w5"] = replace(ws["w5"], running=6, ts_ms=now_ms + 1)  # load only: memo reused
    d2 = router.route(req, ClusterView(ws, pools=pools, version=2), NOW_S)
    assert d2 is not None and d2.decode != "w0"
    ws["w0"] = replace(ws["w0"], ts_ms=now_ms)  # the stale worker reports again
    d3 = router.route(req, ClusterView(ws, pools=pools, version=3), NOW_S)
    assert d3 is not None and d3.decode == "w0"


@pytest.mark.parametrize(("n", "path"), [(64, "score_list"), (600, "score_columns")])
def test_pool_size_selects_the_path(n: int, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-worker P/D cluster (32 per role) runs the list path, 600 workers numpy."""
    from controlplane.policy.request.routers.sla import SlaTtftScorer
    from controlplane.policy.request.routers.sla_itl import SlaItlScorer

    calls: list[str] = []
    for cls in (SlaTtftScorer, SlaItlScorer):
        for name in ("score_list", "score_columns"):
            orig = getattr(cls, name)

            def spy(self: Any, *a: Any, _o: Any = orig, _n: str = name) -> Any:
                calls.append(_n)
                return _o(self, *a)

            monkeypatch.setattr(cls, name, spy)
    router = build_router(RouterConfig(policy="sla"))
    now_ms = int(NOW_S * 1000)
    ws = {
        f"w{i}": WorkerSnapshot("c", f"w{i}", ("prefill", "decode")[i % 2], "m", ts_ms=now_ms)
        for i in range(n)
    }
    view = ClusterView(ws, pools=build_pools(ws), version=1)
    d = router.route(RouteRequest("r", "t", "m", 100, 10), view, NOW_S)
    assert d is not None and d.mode == "pd"
    assert calls == [path, path]


@pytest.mark.parametrize("name", ["cpu-tiny-pd-measured", "h100-llama3.1-8b"])
def test_decode_steps_equal_decode_ms(name: str) -> None:
    """The list path's per-batch segments give exactly ``Profile.decode_ms``."""
    from controlplane.policy.request.routers.sla_itl import decode_steps

    prof = load_profile(name)
    steps = decode_steps(prof)
    for ctx in (1.0, 128.0, 700.0, 1024.0, 9000.0):
        row = steps.row(ctx)
        want = [prof.decode_ms(b, ctx) for b in range(700)]
        assert [steps.ms(row, b) for b in range(700)] == want
