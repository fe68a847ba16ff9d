"""Controller metrics: DESIGN.md names on an own registry; gone tenants are removed."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from controlplane.controller.metrics import ControllerMetrics
from controlplane.policy.planner.types import Decision, Effects, ScaleDecision, TenantRisk


def effects(tenants: list[str]) -> Effects:
    risk = {t: TenantRisk(t, 250.0, 20.0, {"ttft": 0.1, "itl": 0.0, "all": 0.1},
                          {"ttft": 0.7, "itl": 0.0, "all": 0.7}) for t in tenants}  # fmt: skip
    return Effects(
        now_s=0.0,
        route_weights={"w1": 0.5},
        draining=frozenset({"w2"}),
        admit=dict.fromkeys(tenants, 0.25),
        risks=risk,
        scale=ScaleDecision({"prefill": 3}, {"prefill": 2}),
        decisions=(Decision("admit", "t", 0.25, "shed_for_higher_priority"),),
        diagnostics={"forecast_rate_rps": 12.5},
    )


def test_effects_become_metrics_and_tenants_are_removed() -> None:
    reg = CollectorRegistry()
    m = ControllerMetrics(reg, "c")
    m.observe(effects(["a", "b"]))

    def v(name: str, **labels: str) -> float | None:
        return reg.get_sample_value(name, {"cluster": "c", **labels})

    assert v("slaplane_predicted_sla_breach_probability", tenant="a", slo="ttft") == 0.7
    assert v("slaplane_predicted_ttft_seconds", tenant="b") == 0.25
    assert v("slaplane_admission_fraction", tenant="a") == 0.25
    assert v("slaplane_desired_replicas", role="prefill") == 3
    assert v("slaplane_current_replicas", role="prefill") == 2
    assert v("slaplane_route_weight", worker="w1") == 0.5
    assert v("slaplane_draining_workers") == 1
    assert v("slaplane_forecast_request_rate") == 12.5
    assert v("slaplane_controller_is_leader") == 0
    assert (
        v("slaplane_controller_decisions_total", kind="admit", reason="shed_for_higher_priority")
        == 1
    )
    m.observe(effects(["a"]))
    assert v("slaplane_predicted_ttft_seconds", tenant="b") is None
    assert v("slaplane_predicted_sla_breach_probability", tenant="b", slo="all") is None
