"""The breach outlook with conditional disaggregation (local prefill): the decode workers'
spare prefill capacity lowers a tenant's predicted TTFT when the router can use it, and
changes nothing when the rule's own guards (KV room, TPOT headroom) would refuse it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controlplane.policy.planner.breach import BreachParams, tenant_risk
from controlplane.policy.planner.outlook import (
    PoolOutlook,
    local_prefill_outlook,
    local_spare,
    pool_outlook,
    resolve_local_prefill,
)
from controlplane.policy.planner.traffic import Shape
from controlplane.policy.planner.types import TickInput
from controlplane.policy.predictor import ProfilePredictor
from controlplane.policy.request.routers.local_prefill import LocalPrefillParams
from controlplane.profiles import CPU_TINY_FIXTURE
from controlplane.schemas import Priority, TenantSLA, WorkerSnapshot
from tests.unit.controller.builders import NOW_S, planner, record, tenant, worker

PRED = ProfilePredictor(CPU_TINY_FIXTURE)
SHAPE = Shape(prompt_tokens=512, output_tokens=64)
PREDICTIVE = LocalPrefillParams(mode="predictive")
TTFT_MS, ITL_MS = 1000.0, 50.0
RPS, HORIZON = 30.0, 30.0  # ~15k prompt tokens/s against ~22k of prefill capacity


def cluster(prefill_queue: int = 20_000, **decode: Any) -> dict[str, WorkerSnapshot]:
    """2 prefill workers with ``prefill_queue`` tokens waiting each, 2 decode workers."""
    decode.setdefault("running", 1)
    decode.setdefault("kv_usage", 0.1)
    decode.setdefault("kv_capacity_tokens", 100_000)
    ws = [worker(f"p{i}", "prefill", waiting=40, waiting_tokens=prefill_queue) for i in range(2)]
    ws += [worker(f"d{i}", "decode", **decode) for i in range(2)]
    return {w.worker: w for w in ws}


def outlooks(
    ws: Mapping[str, WorkerSnapshot],
    params: LocalPrefillParams = PREDICTIVE,
    itl_ms: float = ITL_MS,
    rps: float = RPS,
) -> tuple[PoolOutlook, PoolOutlook]:
    pd = pool_outlook(PRED, ws, ["p0", "p1"], [], SHAPE, rps, HORIZON)
    lo = local_prefill_outlook(
        PRED, ws, ["p0", "p1"], ["d0", "d1"], SHAPE, rps, HORIZON, params, TTFT_MS, itl_ms
    )
    return pd, lo


class TestLocalPrefillOutlook:
    def test_idle_decode_workers_absorb_an_overloaded_prefill_pool(self) -> None:
        pd, lo = outlooks(cluster())
        assert pd.ttft_ms > TTFT_MS  # P/D alone misses
        assert 0.0 < lo.local_share <= 1.0
        assert lo.local_ttft_ms < 0.9 * TTFT_MS  # the rule's ttft_margin
        assert lo.ttft_ms <= pd.ttft_ms  # what stays P/D queues behind no more
        assert lo.mean_ttft_ms < 0.5 * pd.ttft_ms

    @pytest.mark.parametrize(
        "decode",
        [
            {"kv_usage": 0.95},  # above kv_max_usage
            {"kv_usage": 0.5, "kv_capacity_tokens": 1000},  # no room for prompt + output
        ],
    )
    def test_decode_workers_without_kv_room_change_nothing(self, decode: dict[str, Any]) -> None:
        pd, lo = outlooks(cluster(**decode))
        assert lo.local_share == 0.0
        assert lo.ttft_ms == pytest.approx(pd.ttft_ms)
        assert lo.mean_ttft_ms == pytest.approx(pd.ttft_ms)

    def test_decode_workers_without_tpot_headroom_change_nothing(self) -> None:
        ws = cluster(running=8)
        # an ITL target whose margin (0.8 x) is under one decode step at batch 9
        pd, lo = outlooks(ws, itl_ms=4.0)
        assert local_spare(PRED, ws["d0"], SHAPE, PREDICTIVE, TTFT_MS, 4.0) is None
        assert lo.local_share == 0.0 and lo.mean_ttft_ms == pytest.approx(pd.ttft_ms)
        # the same workers with a loose ITL target do take load
        _, loose = outlooks(ws, itl_ms=200.0)
        assert loose.local_share > 0.0

    def test_tighter_itl_target_leaves_less_spare(self) -> None:
        ws = cluster(running=8)
        tight = local_spare(PRED, ws["d0"], SHAPE, PREDICTIVE, TTFT_MS, 20.0)
        loose = local_spare(PRED, ws["d0"], SHAPE, PREDICTIVE, TTFT_MS, 200.0)
        assert tight is not None and loose is not None
        assert tight.tokens_per_ms < loose.tokens_per_ms

    def test_never_mode_is_plain_pd(self) -> None:
        pd, lo = outlooks(cluster(), LocalPrefillParams(mode="never"))
        assert lo == pd

    def test_safe_pd_path_stays_pd(self) -> None:
        """Under the rule's risk ratio the router never looks at local prefill."""
        pd, lo = outlooks(cluster(prefill_queue=0), rps=1.0)
        assert pd.ttft_ms <= PREDICTIVE.risk_ratio * TTFT_MS
        assert lo == pd

    def test_more_spare_than_excess_keeps_pd_near_the_risk_threshold(self) -> None:
        """No queue yet, load just above what P/D takes at the risk threshold: decode
        workers take the excess and the P/D path stays well under the target."""
        ws = cluster(prefill_queue=0)
        pd, lo = outlooks(ws, rps=40.0)
        assert pd.ttft_ms > PREDICTIVE.risk_ratio * TTFT_MS
        assert 0.0 < lo.local_share < 1.0
        assert lo.ttft_ms < pd.ttft_ms and lo.mean_ttft_ms < TTFT_MS

    def test_threshold_mode_sends_short_prompts_local(self) -> None:
        params = LocalPrefillParams(mode="threshold", max_local_prefill_length=1000)
        pd, lo = outlooks(cluster(), params)
        assert lo.local_share > 0.0 and lo.mean_ttft_ms < pd.ttft_ms


class TestBreachMixture:
    SLA = TenantSLA(tenant="t", priority=Priority.STANDARD, ttft_ms=TTFT_MS, itl_ms=ITL_MS)

    def risk(self, share: float, local_ms: float) -> float:
        r = tenant_risk(
            self.SLA, 5000.0, 10.0, 0.3, 0.3, (), 2.0, NOW_S, BreachParams(), share, local_ms
        )
        return r.miss_probability["ttft"]

    def test_local_share_prices_both_paths(self) -> None:
        all_pd = self.risk(0.0, 0.0)
        half = self.risk(0.5, 200.0)
        all_local = self.risk(1.0, 200.0)
        assert all_pd > 0.99 and all_local < 0.01
        assert half == pytest.approx(0.5 * all_pd + 0.5 * all_local)

    def test_local_path_that_misses_still_misses(self) -> None:
        assert self.risk(1.0, 3000.0) > 0.99


class TestResolve:
    def test_policy_default_and_explicit_mode(self) -> None:
        assert resolve_local_prefill("sla").mode == "predictive"
        assert resolve_local_prefill("round_robin").mode == "never"
        lp = {"local-prefill": {"mode": "never", "itl_margin": 0.5}}
        got = resolve_local_prefill("sla", lp)
        assert got.mode == "never" and got.itl_margin == 0.5
        assert resolve_local_prefill("kv_aware", {"local-prefill": {"mode": "threshold"}}).mode == (
            "threshold"
        )


class TestPlanner:
    """The controller prices TTFT with local prefill only when configured to."""

    TENANTS = {"silver": tenant("silver", Priority.STANDARD, TTFT_MS, ITL_MS)}

    def predicted(self, mode: str, **decode: Any) -> float:
        cp = planner(local_prefill={"mode": mode})
        ws = cluster(**decode)
        eff = None
        for i in range(5):  # 30 req/s of the shape above finish every second
            now = NOW_S + i
            ws = {k: replace(w, ts_ms=int(now * 1000) - 100, seq=i) for k, w in ws.items()}
            recs = [
                record(i * 100 + j, "silver", prompt_tokens=512, output_tokens=64)
                for j in range(30)
            ]
            eff = cp.on_tick(TickInput(now, ws, self.TENANTS, recs))
        assert eff is not None
        return eff.risks["silver"].predicted_ttft_ms

    def test_default_config_is_plain_pd(self) -> None:
        assert planner().cfg.local_prefill.mode == "never"

    def test_local_prefill_lowers_predicted_ttft_with_idle_decode(self) -> None:
        never = self.predicted("never")
        local = self.predicted("predictive")
        assert local < 0.5 * never

    def test_local_prefill_changes_nothing_with_full_decode(self) -> None:
        assert self.predicted("predictive", kv_usage=0.95) == pytest.approx(
            self.predicted("never", kv_usage=0.95)
        )


def test_replay_hook_passes_the_routing_policys_local_prefill() -> None:
    from controlplane.profiles import load_profile
    from controlplane.replay.cluster import ClusterShape
    from controlplane.replay.control import PlannerHook
    from controlplane.replay.driver import ReplayConfig

    prof = load_profile("cpu-tiny")
    shape = ClusterShape(prefill=1, decode=1)
    hook = PlannerHook(ReplayConfig(policy="sla", shape=shape, profile=prof), {})
    assert hook.planner.cfg.local_prefill.mode == "predictive"
    lp = {"local-prefill": {"mode": "never"}}
    cfg = ReplayConfig(policy="sla", shape=shape, profile=prof, router_params=lp)
    assert PlannerHook(cfg, {}).planner.cfg.local_prefill.mode == "never"
    assert (
        PlannerHook(
            ReplayConfig(policy="round_robin", shape=shape, profile=prof), {}
        ).planner.cfg.local_prefill.mode
        == "never"
    )


def test_live_controller_reads_local_prefill_from_its_policy_config(tmp_path: Path) -> None:
    """The live controller cannot see the gateways' router config: ``--policy-config``."""
    from controlplane.controller.app import policy_config
    from controlplane.controller.settings import ControllerSettings

    f = tmp_path / "policy.json"
    f.write_text(json.dumps({"local_prefill": {"mode": "predictive", "itl_margin": 0.7}}))
    s = ControllerSettings(_env_prefix="SLAPLANE_CTL_TEST_UNSET_", policy_config=str(f))  # type: ignore[call-arg]
    lp = policy_config(s).local_prefill
    assert lp.mode == "predictive" and lp.itl_margin == 0.7
    plain = ControllerSettings(_env_prefix="SLAPLANE_CTL_TEST_UNSET_")  # type: ignore[call-arg]
    assert policy_config(plain).local_prefill.mode == "never"
