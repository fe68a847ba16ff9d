from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from controlplane.profiles import load_profile
from controlplane.replay.accounting import OK
from controlplane.replay.cluster import ClusterShape
from controlplane.replay.control import planner_factory
from controlplane.replay.driver import ControlOutput, ReplayConfig, ReplayDriver
from controlplane.replay.tenants import uniform_mix
from controlplane.replay.traces import Trace, TraceRequest
from controlplane.schemas import RequestRecord, WorkerSnapshot

H100 = load_profile("h100-llama3.1-8b")


def _trace(n: int = 1500, rate: float = 10.0) -> Trace:
    rng = random.Random(7)
    t, reqs = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        reqs.append(TraceRequest(i, t, rng.randrange(1000, 4000), rng.randrange(4, 40)))
    return Trace("poisson", tuple(reqs))


class Scripted:
    """A fake controller: at t ≥ 10 s move one decode GPU to prefill, like the planner
    would after draining d2 (remove_workers), and record what it saw."""

    def __init__(self) -> None:
        self.seen_replicas: list[dict[str, int]] = []
        self.records = 0

    def tick(
        self,
        now_s: float,
        workers: Mapping[str, WorkerSnapshot],
        records: Sequence[RequestRecord],
        replicas: Mapping[str, int],
    ) -> ControlOutput:
        self.seen_replicas.append(dict(replicas))
        self.records += len(records)
        if now_s < 10:
            return ControlOutput(next_tick_s=1.0)
        if now_s < 12:  # drain first (no new requests), then remove
            return ControlOutput(draining=frozenset({"d2"}), next_tick_s=1.0)
        return ControlOutput(
            desired={"prefill": 2, "decode": 2}, remove={"decode": ("d2",)}, next_tick_s=1.0
        )


def _cfg(**kw: object) -> ReplayConfig:
    base = {"policy": "least_loaded", "shape": ClusterShape(1, 3), "profile": H100}
    return ReplayConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_scale_actions_follow_actuator_semantics() -> None:
    tr = _trace()
    mix = uniform_mix()
    hook = Scripted()
    drv = ReplayDriver(
        _cfg(gpu_budget=4, scale_up_delay_s=5.0), tr, mix.assign(len(tr.requests), 0), mix.slas,
        hook,
    )  # fmt: skip
    res = drv.run()
    assert res.control_ticks > 20
    # every request reported exactly once (the last few after the final tick stay buffered)
    assert hook.records + len(drv.records) == len(tr.requests)
    d2 = next(s for s in drv.retired if s.id == "d2")
    assert d2.stopped_s is not None and 12.0 <= d2.stopped_s < 13.0
    p1 = drv.slots["p1"]
    assert p1.started_s == d2.stopped_s and p1.ready_s == p1.started_s + 5.0
    assert p1.engine.stats.prompt_tokens_total > 0  # it served once ready
    assert {"prefill": 2, "decode": 2} in hook.seen_replicas
    assert max(sum(r.values()) for r in hook.seen_replicas) <= 4
    # d2 was drained before removal: nothing was lost with it
    assert all(o.status == OK for o in res.outcomes)
    life = sum(s.gpu_seconds(res.sim_end_s) for s in [*drv.retired, *drv.slots.values()])
    assert res.gpu_seconds == life <= 4 * res.sim_end_s + 1e-6


def test_budget_caps_scale_up() -> None:
    tr = _trace(300)
    mix = uniform_mix()

    class Greedy(Scripted):
        def tick(self, now_s, workers, records, replicas):  # type: ignore[no-untyped-def]
            self.seen_replicas.append(dict(replicas))
            return ControlOutput(desired={"prefill": 5, "decode": 5}, next_tick_s=1.0)

    hook = Greedy()
    drv = ReplayDriver(_cfg(gpu_budget=6), tr, mix.assign(300, 0), mix.slas, hook)
    drv.run()
    assert max(sum(r.values()) for r in hook.seen_replicas) == 6


def test_real_planner_runs_on_virtual_tick() -> None:
    """The controller's ControlPlanner, unmodified, drives the replay (no forked logic)."""
    tr = _trace(800)
    mix = uniform_mix()
    cfg = _cfg(gpu_budget=4, control_interval_s=1.0)
    hook = planner_factory()(cfg, mix.slas)
    res = ReplayDriver(cfg, tr, mix.assign(800, 0), mix.slas, hook).run()
    assert res.control_ticks >= int(res.sim_end_s) - 1
    assert res.gpu_seconds <= 4 * res.sim_end_s + 1e-6
    assert len(res.outcomes) == 800
