from __future__ import annotations

import random

from controlplane.profiles import load_profile
from controlplane.replay.capacity import capacity_bound
from controlplane.replay.cluster import ClusterShape
from controlplane.replay.driver import ReplayConfig
from controlplane.replay.runner import Experiment, run_once, sweep_rate
from controlplane.replay.tenants import uniform_mix
from controlplane.replay.traces import Trace, TraceRequest

H100 = load_profile("h100-llama3.1-8b")


def _exp() -> Experiment:
    rng = random.Random(1)
    t = 0.0
    reqs = []
    for i in range(300):
        t += rng.expovariate(4.0)
        reqs.append(TraceRequest(i, t, rng.randrange(500, 4000), rng.randrange(5, 60)))
    trace = Trace("poisson", tuple(reqs))
    mix = uniform_mix(500, 50)
    tenants = mix.assign(len(reqs), 0)
    cfg = ReplayConfig(policy="round_robin", shape=ClusterShape(1, 1), profile=H100)
    cap = capacity_bound(reqs, [mix.slas[x] for x in tenants], H100, prefill=1, decode=1)
    return Experiment(trace, mix, tenants, cfg, cap)


def test_sweep_brackets_the_target() -> None:
    exp = _exp()
    s = sweep_rate(exp, "least_loaded", target=0.9, precision=0.05)
    assert s.max_rate_scale > 0
    assert s.attainment >= 0.9
    failing = [p for p in s.points if p[1] < 0.9]
    assert failing, "a sweep must find a failing scale above the answer"
    assert min(p[0] for p in failing) > s.max_rate_scale
    assert min(p[0] for p in failing) <= s.max_rate_scale * 1.06
    # The answer really passes when re-run, and the bound is above it.
    again, _ = run_once(exp, "least_loaded", s.max_rate_scale)
    assert again.attainment >= 0.9
    assert s.bound_scale is not None and s.bound_scale >= s.max_rate_scale
    assert s.of_bound is not None and 0 < s.of_bound <= 1


def test_run_once_reports_capacity_fraction() -> None:
    summary, res = run_once(_exp(), "sla", 1.0)
    assert summary.offered == 300 and summary.capacity_rps is not None
    assert summary.bound_rps is not None and summary.of_bound is not None
    assert summary.goodput_rps <= summary.bound_rps * 1.0001  # the bound is an upper bound
    assert 0 < summary.of_bound <= 1.0001
    assert res.engine_steps > 0
