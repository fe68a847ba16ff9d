"""The controller's policy core: ``ControlPlanner.on_tick(TickInput) -> Effects``.

One object runs every policy in order on the state a driver hands it:

1. traffic: new request records update per-tenant shapes and outcomes;
2. calibration: measured TTFT (records) and ITL (decode snapshots) correct the
   base latency predictor;
3. breach: per tenant, predicted TTFT/ITL over the horizon → breach probability;
4. scaling: forecast load → replica targets, drains (``scaler.ScalePlanner``);
5. reroute: route weights per worker (``reroute.route_weights``);
6. throttle: per-tenant admit fractions (``throttle.Throttle``).

No I/O, no clock: the live loop and the replay driver both call ``on_tick`` with
``now_s`` and get the same decisions for the same inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.planner.breach import BreachParams, tenant_risk
from controlplane.policy.planner.breach_calibration import BreachCalibrationParams, BreachCalibrator
from controlplane.policy.planner.calibration import (
    CalibratedPredictor,
    CalibrationParams,
    ResidualCalibrator,
    itl_extra,
    ttft_extra,
)
from controlplane.policy.planner.outlook import (
    is_stale,
    local_prefill_enabled,
    local_prefill_outlook,
    pool_outlook,
    serves_decode,
    serves_prefill,
    worker_itl_ms,
    worker_ttft_ms,
)
from controlplane.policy.planner.reroute import RerouteParams, WorkerSignal, route_weights
from controlplane.policy.planner.scale import EngineLimits
from controlplane.policy.planner.scaler import ScaleParams, ScalePlanner
from controlplane.policy.planner.throttle import Throttle, ThrottleParams
from controlplane.policy.planner.traffic import TrafficWindow
from controlplane.policy.planner.types import Decision, Effects, TenantRisk, TickInput
from controlplane.policy.predictor import LatencyPredictor
from controlplane.policy.request.routers.local_prefill import LocalPrefillParams
from controlplane.policy.types import PLUGIN_SOURCE
from controlplane.profiles import Profile
from controlplane.schemas import TenantSLA


class ControlPolicyConfig(BaseModel):
    """Every knob of the core; the CLI and replay build it the same way."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tick_s: float = Field(default=1.0, gt=0)
    stale_after_s: float = Field(default=3.0, gt=0)
    default_ttft_ms: float = Field(default=2000.0, gt=0)
    default_itl_ms: float = Field(default=50.0, gt=0)
    traffic_window_s: float = Field(default=60.0, gt=0)
    breach: BreachParams = BreachParams()
    breach_calibration: BreachCalibrationParams = BreachCalibrationParams()
    throttle: ThrottleParams = ThrottleParams()
    reroute: RerouteParams = RerouteParams()
    scale: ScaleParams = ScaleParams()
    calibration: CalibrationParams = CalibrationParams()
    priority_queueing: bool = True
    """The gateways hold lower classes back so they cannot queue work past a higher
    active class's TTFT target (``admission.protect``). On a disaggregated prefill
    pool a tenant's predicted TTFT then comes from the load of its own and higher
    classes, not the whole pool's, and only ITL risk (shared decode batches) makes
    the throttle shed lower classes: shedding them for a TTFT risk they do not cause
    dropped requests that would have been served in time and helped nobody (more
    prefill replicas do). Unified (role ``both``) workers interleave every class's
    decode steps with prefill, so there the whole load and any breach still count."""
    local_prefill: LocalPrefillParams = LocalPrefillParams(mode="never")
    """The gateways' conditional-disaggregation rule (router param ``local-prefill``, mode
    resolved: ``outlook.resolve_local_prefill``). The controller does not see the
    gateways' router config, so set it here as they run it (the replay does from its
    router params; live, the ``--policy-config`` JSON). Unless ``never``, the breach
    outlook counts the decode workers' spare prefill capacity
    (``outlook.local_prefill_outlook``); with ``never`` it prices TTFT on the prefill
    workers alone."""


class ControlPlanner:
    def __init__(
        self,
        config: ControlPolicyConfig,
        base_predictor: LatencyPredictor,
        model: Profile,
        limits: EngineLimits | None = None,
    ) -> None:
        self.cfg = config
        self.traffic = TrafficWindow(window_s=config.traffic_window_s)
        self.predictor = CalibratedPredictor(
            base_predictor,
            ResidualCalibrator(config.calibration),
            ResidualCalibrator(config.calibration),
        )
        self.scaler = ScalePlanner(config.scale, model, limits)
        self.throttle = Throttle(config.throttle)
        self.breach_cal = BreachCalibrator(config.breach_calibration, config.breach.horizon_s)
        self._seen_seq: dict[str, int] = {}
        self._managed_drains: frozenset[str] = frozenset()

    # -- calibration ------------------------------------------------------
    def _calibrate(self, inp: TickInput) -> None:
        for r in inp.new_requests:
            if r.outcome == "ok" and r.predicted_ttft_ms and r.ttft_ms:
                extra = ttft_extra(r.prompt_tokens, r.cached_tokens)
                self.predictor.ttft.observe(r.predicted_ttft_ms, r.ttft_ms, extra)
        shape = self.traffic.shape()
        for w, s in inp.workers.items():
            if s.seq == self._seen_seq.get(w) or not serves_decode(s.role):
                continue
            self._seen_seq[w] = s.seq
            if (
                s.itl_p50_ms
                and s.running > 0
                and not is_stale(s, inp.now_s, self.cfg.stale_after_s)
            ):
                base = worker_itl_ms(self.predictor.base, s, shape, s.running)
                self.predictor.itl.observe(base, s.itl_p50_ms, itl_extra(s.running))

    # -- targets and eligibility -------------------------------------------
    def _targets(self, tenants: Mapping[str, TenantSLA]) -> tuple[float, float]:
        active = set(self.traffic.active_tenants()) & set(tenants)
        slas = [tenants[t] for t in sorted(active or tenants)]
        ttft = min((s.ttft_ms for s in slas), default=self.cfg.default_ttft_ms)
        itl = min((s.itl_ms for s in slas), default=self.cfg.default_itl_ms)
        return ttft, itl

    def _usable(self, inp: TickInput, draining: frozenset[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for w, s in sorted(inp.workers.items()):
            if s.up and w not in draining and not is_stale(s, inp.now_s, self.cfg.stale_after_s):
                out.setdefault(s.role, []).append(w)
        return out

    def _observed(self, inp: TickInput, usable: Mapping[str, list[str]]) -> dict[str, int]:
        if inp.current_replicas is not None:
            return dict(inp.current_replicas)
        counts = {r: len(ws) for r, ws in usable.items()}
        for w in self._managed_drains:  # draining workers still exist until removed
            s = inp.workers.get(w)
            if s is not None and s.up:
                counts[s.role] = counts.get(s.role, 0) + 1
        return counts

    def _in_system(self, inp: TickInput) -> int:
        """Requests on the workers (running + waiting), draining ones included: with the
        records seen, their growth gives the arrivals (``traffic`` docstring). A vLLM
        plugin snapshot of a worker an agent also reports is the same queue: counted once."""
        agents = {s.url for s in inp.workers.values() if s.source != PLUGIN_SOURCE and s.url}
        return sum(
            s.running + s.waiting
            for s in inp.workers.values()
            if s.up
            and not is_stale(s, inp.now_s, self.cfg.stale_after_s)
            and not (s.source == PLUGIN_SOURCE and s.url in agents)
        )

    # -- the tick ------------------------------------------------------------
    def on_tick(self, inp: TickInput) -> Effects:
        now = inp.now_s
        self.traffic.observe(inp.new_requests, now)
        self._calibrate(inp)
        ttft_target, itl_target = self._targets(inp.tenants)
        operator_drains = inp.control.draining - self._managed_drains
        usable = self._usable(inp, inp.control.draining)
        if self.cfg.scale.queue_demand:
            self.traffic.observe_in_system(self._in_system(inp))
        risks = self._risks(inp, usable, itl_target)
        role_risk = {
            "prefill": max((r.breach_probability["ttft"] for r in risks.values()), default=0.0),
            "decode": max((r.breach_probability["itl"] for r in risks.values()), default=0.0),
            "both": max((r.breach for r in risks.values()), default=0.0),
        }
        sc = self.scaler.on_tick(
            now, inp.workers, self.traffic, self._observed(inp, usable), role_risk,
            ttft_target, itl_target, usable,
        )  # fmt: skip
        self._managed_drains = sc.draining
        draining = operator_drains | sc.draining
        decisions: list[Decision] = list(sc.decisions)
        signals = self._signals(inp, ttft_target, itl_target)
        weights, route_dec = route_weights(
            now, inp.workers, signals, draining, inp.control.route_weights, self.cfg.reroute
        )
        shed_slo = "itl" if self._isolated_prefill(inp, usable) else "all"
        admit, admit_dec = self.throttle.decide(
            now, inp.tenants, risks, inp.control.admit, shed_slo
        )
        decisions += route_dec + admit_dec
        diag = dict(sc.diagnostics)
        diag.update(ttft_target_ms=ttft_target, itl_target_ms=itl_target)
        diag.update(sigma_ttft=self.predictor.ttft.sigma, sigma_itl=self.predictor.itl.sigma)
        return Effects(
            now_s=now,
            route_weights=weights,
            draining=draining,
            admit=admit,
            risks=self._exported(inp, risks),
            scale=sc.decision,
            decisions=tuple(decisions),
            next_tick_s=self.cfg.tick_s,
            diagnostics=diag,
        )

    def _exported(
        self, inp: TickInput, risks: Mapping[str, TenantRisk]
    ) -> Mapping[str, TenantRisk]:
        """The risks as exported: calibrated against realised outcomes once enough exist
        (``breach_calibration``); the actions above used the raw ones."""
        if not self.cfg.breach_calibration.enabled:
            return risks
        cal = self.breach_cal
        cal.observe(inp.new_requests, inp.tenants)
        cal.label(inp.now_s, inp.tenants)
        return cal.calibrate(inp.now_s, risks)

    def _isolated_prefill(self, inp: TickInput, usable: Mapping[str, list[str]]) -> bool:
        """Priority queueing isolates classes only where prefill has workers of its own."""
        return self.cfg.priority_queueing and bool(usable.get("prefill")) and not usable.get("both")

    def _risks(
        self, inp: TickInput, usable: Mapping[str, list[str]], itl_target: float
    ) -> dict[str, TenantRisk]:
        weights = inp.control.route_weights
        pre = [
            w for r, ws in usable.items() if serves_prefill(r) for w in ws if weights.get(w, 1) > 0
        ]
        dec = [
            w for r, ws in usable.items() if serves_decode(r) for w in ws if weights.get(w, 1) > 0
        ]
        if not pre:  # fallback as the gateways do: weight-0 workers still serve
            pre = [w for r, ws in usable.items() if serves_prefill(r) for w in ws]
        if not dec:
            dec = [w for r, ws in usable.items() if serves_decode(r) for w in ws]
        now = inp.now_s
        # latency depends on the load that reaches workers: the admitted rate now, or the
        # forecast offered load times the share currently admitted, whichever is higher
        share = self.traffic.admitted_share(now)
        forecast = self.scaler.forecaster.forecast().rate_rps * share
        admitted = self.traffic.admitted_rate_rps(now)
        total_rps = max(admitted, forecast)
        horizon = self.cfg.breach.horizon_s
        isolated = self._isolated_prefill(inp, usable)
        lp = self.cfg.local_prefill
        # decode workers that may prefill locally: dedicated ones beside dedicated prefill
        local = (
            [w for w in dec if inp.workers[w].role == "decode"]
            if local_prefill_enabled(lp) and usable.get("prefill")
            else []
        )
        out: dict[str, TenantRisk] = {}
        for t, sla in sorted(inp.tenants.items()):
            shape = self.traffic.shape(t)
            ttft_rps = total_rps
            if isolated and admitted > 0:
                rank = sla.priority.rank
                ahead = [u for u, s in inp.tenants.items() if s.priority.rank >= rank]
                ttft_rps = total_rps * self.traffic.admitted_rate_rps_of(ahead, now) / admitted
            if local:
                ttft = local_prefill_outlook(
                    self.predictor, inp.workers, pre, local, shape, ttft_rps, horizon, lp,
                    sla.ttft_ms, min(sla.itl_ms, itl_target), weights,
                )  # fmt: skip
            else:
                ttft = pool_outlook(
                    self.predictor, inp.workers, pre, [], shape, ttft_rps, horizon, weights
                )
            itl_ms = pool_outlook(
                self.predictor, inp.workers, [], dec, shape, total_rps, horizon, weights
            ).itl_ms
            out[t] = tenant_risk(
                sla, ttft.ttft_ms, itl_ms, self.predictor.ttft.sigma, self.predictor.itl.sigma,
                self.traffic.outcomes.get(t, ()), self.traffic.rate_rps(t, now), now,
                self.cfg.breach, ttft.local_share, ttft.local_ttft_ms,
            )  # fmt: skip
        return out

    def _signals(
        self, inp: TickInput, ttft_target: float, itl_target: float
    ) -> dict[str, WorkerSignal]:
        shape = self.traffic.shape()
        out: dict[str, WorkerSignal] = {}
        for w, s in inp.workers.items():
            t = (
                worker_ttft_ms(self.predictor, s, shape) / ttft_target
                if serves_prefill(s.role)
                else 0.0
            )
            i = (
                worker_itl_ms(self.predictor, s, shape) / itl_target
                if serves_decode(s.role)
                else 0.0
            )
            out[w] = WorkerSignal(ttft_ratio=t, itl_ratio=i)
        return out
