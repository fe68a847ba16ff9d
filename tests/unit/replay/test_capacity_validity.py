"""The capacity bound against schedules that actually run: the replay (real sim engines,
every policy) never meets more requests than the bound allows, and the step-10 online
reference — a schedule of the bound's pooled server — never exceeds it either."""

from __future__ import annotations

import random

import numpy as np
import pytest

from controlplane.profiles import load_profile
from controlplane.replay.capacity import (
    _online_admit,
    _prefill_on_time,
    burst_bound_scale,
    capacity_bound,
)
from controlplane.replay.cluster import ClusterShape
from controlplane.replay.driver import ReplayConfig
from controlplane.replay.runner import Experiment, run_once
from controlplane.replay.tenants import uniform_mix
from controlplane.replay.traces import Trace, TraceRequest

H100 = load_profile("h100-llama3.1-8b")


def test_online_reference_never_beats_the_exact_pooled_optimum() -> None:
    rng = random.Random(11)
    for _ in range(300):
        n = rng.randint(1, 40)
        r = np.sort(np.array([rng.uniform(0, 20) for _ in range(n)]))
        p = np.array([rng.choice([0.1, 1.0, 4.0]) * rng.random() for _ in range(n)])
        slack = rng.uniform(0.5, 5)
        g = rng.randint(1, 4)
        online = _online_admit(r, p, slack, g)
        assert online <= _prefill_on_time(r, p / g, slack)
        # the first job that fits alone is admitted unless an earlier one already was
        if (p <= slack).any():
            assert online >= 1


def _bursty(seed: int, n: int, hashes: bool) -> Trace:
    """Poisson background plus bursts; with ``hashes``, prompts share prefixes of a
    few 512-token families (the Mooncake shape: chained ids, one per block)."""
    rng = random.Random(seed)
    reqs: list[TraceRequest] = []
    t = 0.0
    fams = [tuple(range(1000 * f, 1000 * f + 12)) for f in range(3)]
    nxt = 10**6
    for i in range(n):
        t += rng.expovariate(3.0) if rng.random() < 0.7 else 0.0  # 30 % arrive together
        prompt = rng.choice([300, 900, 2500, 5000])
        ids: tuple[int, ...] = ()
        if hashes:
            blocks = max(1, prompt // 512)
            fam = rng.choice(fams)
            shared = rng.randint(0, min(blocks, len(fam)))
            ids = fam[:shared] + tuple(range(nxt, nxt + blocks - shared))
            nxt += blocks
        reqs.append(TraceRequest(i, t, prompt, rng.randrange(2, 40), ids))
    return Trace(f"bursty{seed}", tuple(reqs), 512 if hashes else 0)


@pytest.mark.parametrize(
    ("seed", "hashes", "shape"),
    [
        (1, False, ClusterShape(1, 1)),
        (2, True, ClusterShape(1, 1)),
        (3, True, ClusterShape(workers=2)),
    ],
)
def test_replay_never_beats_the_bound(seed: int, hashes: bool, shape: ClusterShape) -> None:
    trace = _bursty(seed, 60, hashes)
    mix = uniform_mix(300, 25)  # tight: the bursts overload one prefill GPU
    tenants = mix.assign(len(trace.requests), 0)
    slas = [mix.slas[x] for x in tenants]
    cap = capacity_bound(
        trace.requests, slas, H100, block_tokens=trace.block_tokens,
        prefill=shape.prefill, decode=shape.decode, workers=shape.workers,
    )  # fmt: skip
    cfg = ReplayConfig(policy="round_robin", shape=shape, profile=H100)
    exp = Experiment(trace, mix, tenants, cfg, cap)
    policies = ["round_robin", "least_loaded", "kv_aware", "sla"]
    tight = 0
    for scale in (1.0, 4.0, 16.0, 64.0):
        bound = cap.burst_met(scale)
        assert cap.online_met(scale) <= bound
        for policy in policies:
            summary, _ = run_once(exp, policy, scale)
            assert summary.met <= bound, (policy, scale, summary.met, bound)
            tight = max(tight, summary.met)
    assert tight > 0


def test_online_reference_scale_is_below_the_bound_scale() -> None:
    trace = _bursty(4, 200, False)
    mix = uniform_mix(500, 25)
    slas = [mix.slas[x] for x in mix.assign(len(trace.requests), 0)]
    for kw in ({"prefill": 1, "decode": 1}, {"prefill": 2, "decode": 2}, {"workers": 3}):
        cap = capacity_bound(trace.requests, slas, H100, **kw)  # type: ignore[arg-type]
        bound = burst_bound_scale(cap)
        online = cap.online_reference_scale()
        assert 0 < online <= bound * 1.02  # both bisected to 1 %
        j = cap.to_json()
        assert j["burst"]["online_reference_rate_scale"] == pytest.approx(online)
