"""The scaling state machine: forecast load per interval, turn it into replica targets
with hysteresis, cooldowns and drain-before-remove.

Per role: ``up`` = replicas the forecast needs at ``max_utilization``; ``down`` =
replicas it would need at ``max_utilization x down_utilization_ratio``. Scale up to
``up`` at once (after ``up_cooldown_s``); scale down by one only when ``down`` has
been below the target for ``down_stable_s`` and nothing changed for
``down_cooldown_s``. The gap between the two utilisations plus the stability window
is what keeps Poisson noise in a steady load from flipping the target. Observed
breach risk above ``risk_scale_up`` adds one replica beyond the model (the profile
may be wrong), and no replica is removed while risk is above ``risk_block_down``.
A scale-down first drains the least-loaded worker; the target drops
only when it is idle, gone, or ``drain_timeout_s`` passed.

Demand is offered load, not completions: the forecast is fed arrivals (records
+ queue growth, see ``traffic``), and the prompt tokens already queued on the
prefill workers (telemetry) are demand too, planned to drain within
``backlog_drain_s`` on top of the forecast, so a sustained overload asks for the
replicas it needs at once instead of one capacity step per interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.policy.planner.forecast import Forecast, LoadForecaster
from controlplane.policy.planner.outlook import queued_tokens, serves_prefill
from controlplane.policy.planner.scale import (
    EngineLimits,
    RoleNeed,
    apply_gpu_budget,
    decode_need,
    prefill_need,
)
from controlplane.policy.planner.scale_rules import RoleState, ScaleParams, pick_drain, role_step
from controlplane.policy.planner.traffic import Shape, TrafficWindow
from controlplane.policy.planner.types import Decision, ScaleDecision
from controlplane.profiles import Profile
from controlplane.schemas import WorkerSnapshot

__all__ = ["Forecast", "ScaleOutcome", "ScaleParams", "ScalePlanner"]


@dataclass(frozen=True, slots=True)
class ScaleOutcome:
    decision: ScaleDecision | None
    draining: frozenset[str]
    decisions: list[Decision]
    diagnostics: dict[str, float]


class ScalePlanner:
    """Holds the forecaster and per-role state; ``on_tick`` is deterministic in its inputs."""

    def __init__(
        self, params: ScaleParams, model: Profile, limits: EngineLimits | None = None
    ) -> None:
        self.p = params
        self.model = model
        self.limits = limits or EngineLimits()
        self.forecaster = LoadForecaster(params.load_predictor, params.predictor_params)
        self.roles: dict[str, RoleState] = {}
        self.retired: dict[str, float] = {}
        self._interval_start_s: float | None = None
        self._budget_bound = False
        self._last_split: dict[str, int] | None = None
        self._last_rebalance_s = -math.inf

    def _advance_interval(self, now_s: float, traffic: TrafficWindow) -> None:
        if self._interval_start_s is None:
            self._interval_start_s = now_s
            traffic.take_interval(0.0)  # drop anything before the first interval
        elif now_s - self._interval_start_s >= self.p.interval_s:
            t = traffic.take_interval(now_s - self._interval_start_s)
            self.forecaster.add(t)
            self._interval_start_s = now_s

    def backlog_rps(self, f: Forecast, backlog_tokens: float) -> float:
        """Queued prompt tokens as extra request rate: requests of the forecast shape
        that must be prefilled within ``backlog_drain_s`` beside new arrivals."""
        drain_s = self.p.backlog_drain_s
        if drain_s is None or backlog_tokens <= 0:
            return 0.0
        uncached = max(1.0, f.prompt_tokens * (1.0 - min(max(f.cached_ratio, 0.0), 1.0)))
        return backlog_tokens / uncached / drain_s

    def needs(
        self,
        f: Forecast,
        ttft_target_ms: float,
        itl_target_ms: float,
        backlog_tokens: float = 0.0,
    ) -> dict[str, RoleNeed]:
        pf = prefill_need(
            self.model, f.rate_rps + self.backlog_rps(f, backlog_tokens), f.prompt_tokens,
            f.cached_ratio, ttft_target_ms, self.p.max_utilization, self.p.tail_factor,
        )  # fmt: skip
        dc = decode_need(
            self.model, f.rate_rps, f.prompt_tokens, f.output_tokens, itl_target_ms,
            self.limits, self.p.itl_headroom,
        )  # fmt: skip
        both = RoleNeed(
            pf.replicas + dc.replicas, min(pf.per_replica_rps, dc.per_replica_rps),
            max(pf.predicted_ms, dc.predicted_ms), pf.feasible and dc.feasible,
            f"prefill[{pf.detail}] decode[{dc.detail}]",
        )  # fmt: skip
        return {"prefill": pf, "decode": dc, "both": both}

    def on_tick(
        self,
        now_s: float,
        workers: Mapping[str, WorkerSnapshot],
        traffic: TrafficWindow,
        observed: Mapping[str, int],
        risk: Mapping[str, float],
        ttft_target_ms: float,
        itl_target_ms: float,
        usable: Mapping[str, list[str]],
    ) -> ScaleOutcome:
        self._advance_interval(now_s, traffic)
        decisions: list[Decision] = []
        for w in [w for w, t in self.retired.items() if w not in workers or now_s - t > 300]:
            del self.retired[w]
        if not self.p.enabled or self.forecaster.points == 0:
            return ScaleOutcome(None, frozenset(self.retired), decisions, {})
        f = self.forecaster.forecast()
        shape = Shape(f.prompt_tokens, f.output_tokens, f.cached_ratio)
        backlog = sum(
            queued_tokens(workers[w], shape)
            for r, ws in usable.items()
            if serves_prefill(r)
            for w in ws
            if w in workers
        )
        needs = self.needs(f, ttft_target_ms, itl_target_ms, backlog)
        roles = {r for r, n in observed.items() if n > 0} | set(self.roles)
        remove: dict[str, tuple[str, ...]] = {}
        for role in sorted(roles or set(self.p.roles)):
            st = self.roles.get(role)
            if st is None:
                st = self.roles[role] = RoleState(target=observed.get(role, 0))
            remove[role] = self._progress_drains(role, st, now_s, workers, decisions)
            down_to, out = role_step(
                self.p, st, role, now_s, needs[role], risk.get(role, 0.0), observed.get(role, 0)
            )
            decisions += out
            if down_to is not None:
                self._start_drain(role, st, now_s, workers, usable.get(role, []), decisions)
        self._apply_budget(decisions, now_s, observed)
        diag = {
            "forecast_rate_rps": f.rate_rps,
            "forecast_prompt_tokens": f.prompt_tokens,
            "forecast_output_tokens": f.output_tokens,
            "forecast_cached_ratio": f.cached_ratio,
            "backlog_prompt_tokens": backlog,
            "backlog_rps": self.backlog_rps(f, backlog),
        }
        for r, n in needs.items():
            diag[f"need_{r}"] = n.replicas
        draining = frozenset(self.retired) | {w for st in self.roles.values() for w in st.drains}
        dec = ScaleDecision(
            desired={r: st.target for r, st in self.roles.items()},
            observed=dict(observed),
            remove_workers={r: ws for r, ws in remove.items() if ws},
            reasons={r: needs[r].detail for r in self.roles},
        )
        return ScaleOutcome(dec, draining, decisions, diag)

    def _progress_drains(
        self,
        role: str,
        st: RoleState,
        now_s: float,
        workers: Mapping[str, WorkerSnapshot],
        decisions: list[Decision],
    ) -> tuple[str, ...]:
        done: list[str] = []
        for w, start in list(st.drains.items()):
            s = workers.get(w)
            idle = s is not None and s.running == 0 and s.waiting == 0 and s.ts_ms / 1000 > start
            timed_out = now_s - start >= self.p.drain_timeout_s
            if s is None or idle or timed_out:
                why = "gone" if s is None else "idle" if idle else "drain_timeout"
                del st.drains[w]
                st.target = max(self.p.min_replicas, st.target - 1)
                st.last_change_s = now_s
                self.retired[w] = now_s
                done.append(w)
                decisions.append(
                    Decision("scale", role, st.target, f"drained_{why}", {"worker": w})
                )
        return tuple(done)

    def _start_drain(
        self,
        role: str,
        st: RoleState,
        now_s: float,
        workers: Mapping[str, WorkerSnapshot],
        usable: list[str],
        decisions: list[Decision],
    ) -> None:
        ins = {"target": st.target, "below_since_s": st.below_since_s}
        candidates = [w for w in usable if w in workers and w not in self.retired]
        if len(candidates) <= 1:
            st.target -= 1
            st.last_change_s = now_s
            decisions.append(Decision("scale", role, st.target, "forecast_below_no_drain", ins))
            return
        w = pick_drain(workers, candidates)
        st.drains[w] = now_s
        st.below_since_s = None
        decisions.append(Decision("drain", w, role, "forecast_below", ins))

    def _apply_budget(
        self, decisions: list[Decision], now_s: float, observed: Mapping[str, int]
    ) -> None:
        desired = {r: st.target for r, st in self.roles.items()}
        mins = dict.fromkeys(desired, self.p.min_replicas)
        out, bound = apply_gpu_budget(desired, self.p.gpus_per_replica, self.p.gpu_budget, mins)
        if bound and not self._budget_bound:
            decisions.append(Decision("scale", "all", out, "gpu_budget", {"wanted": desired}))
        self._budget_bound = bound
        out = self._hold_split(out, now_s, observed, decisions)
        for r, n in out.items():
            self.roles[r].target = n

    def _hold_split(
        self,
        want: dict[str, int],
        now_s: float,
        observed: Mapping[str, int],
        decisions: list[Decision],
    ) -> dict[str, int]:
        """Under a bound GPU budget, keep the split between roles for
        ``rebalance_cooldown_s``: each role's target is raised on its own and the budget
        then clips the other, so with both short the split would flip every tick."""
        p = self.p
        prev = self._last_split if self._last_split is not None else dict(observed)
        gpus = p.gpus_per_replica

        def total(c: Mapping[str, int]) -> int:
            return sum(n * gpus.get(r, 1) for r, n in c.items())

        moved = (
            p.gpu_budget is not None
            and set(prev) == set(want)
            and want != prev
            and total(want) == total(prev) == p.gpu_budget
            and any(want[r] > prev[r] for r in want)
            and any(want[r] < prev[r] for r in want)
        )
        if moved:
            if now_s - self._last_rebalance_s < p.rebalance_cooldown_s:
                decisions.append(
                    Decision(
                        "scale", "all", dict(prev), "budget_split_held",
                        {"wanted": want, "since_s": self._last_rebalance_s},
                    )
                )  # fmt: skip
                want = dict(prev)
            else:
                self._last_rebalance_s = now_s
        elif want != prev and total(want) == p.gpu_budget:
            self._last_rebalance_s = now_s  # the budget just started to bind: a split
        self._last_split = want
        return want
