"""The discrete-event replay driver: a virtual clock over sim engines and the policy core.

Events are trace arrivals (a sorted list, merged with the heap), engine wake-ups
and step completions, and control ticks. At each arrival the driver does what the
gateway does, with the same objects built from ``controlplane.policy.request.registry``:
rate limits → route (the policy's ``Router`` over a ``ClusterView`` of published
snapshots plus the driver's own in-flight counters) → admission (admit fraction,
predictive early rejection) → dispatch. In P/D the prefill worker gets the prompt
with ``max_tokens=1``; when it finishes, the request joins the chosen decode
worker with its KV marked as transferred (``remote_prefill_tokens``), after the
engine config's transfer delay. TTFT is the decode worker's first token.

When admission says "queue" (``QueueParams.max_size`` > 0: a protected lower-priority
request, or a saturated pool) the request is held as the gateway's wait queue holds
it: released best priority first, re-routed and re-judged whenever a prefill step
ends or telemetry refreshes, head-of-line (the best held request that still may not
go blocks the rest, as a gateway wake-up does), and rejected with ``queue_timeout``
at ``AdmissionPolicy.queue_deadline_s``.

Engines are stepped lazily: a step's effects are applied at its end time, and a
pure-decode stretch is fast-forwarded up to the next moment a request could be
added to that engine (next arrival; for decode workers also the end of any
prefill step in flight), which keeps a 1-hour trace to seconds of wall time.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from controlplane.policy.predictor import ProfilePredictor
from controlplane.policy.request.admission import (
    AdmissionPolicy,
    LocalBuckets,
    LocalSlots,
    bucket_specs,
    estimate_tokens,
)
from controlplane.policy.request.pipeline import ControlInputs, Decision, RequestPipeline
from controlplane.policy.request.registry import RouterConfig, build_admission, build_router
from controlplane.policy.request.routers.router import Router
from controlplane.policy.types import ClusterView, RouteDecision, RouteRequest, build_pools
from controlplane.profiles import Profile
from controlplane.replay.accounting import FAILED, OK, REJECTED, Outcome
from controlplane.replay.cluster import ClusterShape, Slot
from controlplane.replay.traces import Trace, TraceRequest
from controlplane.schemas import RequestRecord, Role, TenantSLA, WorkerSnapshot
from workers.sim import EngineConfig, FinishedRequest, SimRequest, StepResult

_WAKE, _DONE, _TICK, _HOLD = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class ControlOutput:
    """What a control tick decided, in the driver's terms (absolute targets)."""

    route_weights: Mapping[str, float] = field(default_factory=dict)
    draining: frozenset[str] = frozenset()
    admit: Mapping[str, float] = field(default_factory=dict)
    desired: Mapping[str, int] | None = None
    """Replicas per role; None = no opinion."""
    remove: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    next_tick_s: float | None = None
    decisions: int = 0


class ControlHook(Protocol):
    """The controller's policy core as the replay drives it (see ``control.py``)."""

    def tick(
        self,
        now_s: float,
        workers: Mapping[str, WorkerSnapshot],
        records: Sequence[RequestRecord],
        replicas: Mapping[str, int],
    ) -> ControlOutput: ...


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    policy: str
    shape: ClusterShape
    profile: Profile
    engine: EngineConfig = field(default_factory=EngineConfig)
    publish_interval_s: float = 0.25
    """Telemetry staleness: snapshots are refreshed at most this often (0 = always fresh)."""
    admission: bool = True
    admission_params: Mapping[str, Any] = field(default_factory=dict)
    router_params: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    control_interval_s: float = 5.0
    gpu_budget: int | None = None
    scale_up_delay_s: float = 30.0
    """Time from a scale-up decision until the new worker serves (model load)."""
    cluster: str = "replay"
    model: str = "model"


@dataclass(slots=True)
class RunResult:
    policy: str
    outcomes: list[Outcome]
    gpu_seconds: float
    sim_end_s: float
    wall_s: float
    engine_steps: int
    control_ticks: int = 0
    scale_events: list[tuple[float, str, int]] = field(default_factory=list)


class _Live:
    """Per-request state while it is in the cluster."""

    __slots__ = ("decision", "on", "outcome", "rank", "req", "sla", "trace", "uncached")

    def __init__(self, trace: TraceRequest, outcome: Outcome, sla: TenantSLA, req: RouteRequest):
        self.trace = trace
        self.outcome = outcome
        self.sla = sla
        self.req = req
        self.rank = sla.priority.rank
        self.decision: RouteDecision | None = None
        self.uncached = 0
        self.on = ""
        """The worker the request is on now (prefill, then decode)."""


class ReplayDriver:
    """One policy, one trace, one cluster. ``run()`` once."""

    def __init__(
        self,
        cfg: ReplayConfig,
        trace: Trace,
        tenants: Sequence[str],
        slas: Mapping[str, TenantSLA],
        control: ControlHook | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        if len(tenants) != len(trace.requests):
            raise ValueError("need one tenant per trace request")
        if trace.block_tokens and trace.block_tokens != cfg.engine.hash_block_tokens:
            # one hash id covers the trace's block, not the engine default's 512 tokens
            cfg = replace(cfg, engine=replace(cfg.engine, hash_block_tokens=trace.block_tokens))
        self.cfg = cfg
        self.trace = trace
        self.tenants = tenants
        self.slas = slas
        self.control = control
        self.progress = progress
        self.block_tokens = trace.block_tokens or 16
        predictor = ProfilePredictor(cfg.profile)
        self.router: Router = build_router(
            RouterConfig(
                policy=cfg.policy,
                params=dict(cfg.router_params),
                block_tokens=self.block_tokens,
                prefix_index_blocks=max(1, cfg.profile.kv_capacity_tokens // self.block_tokens)
                * max(1, cfg.shape.gpus),
            ),
            predictor,
        )
        self.predictor = predictor
        self.admission: AdmissionPolicy = build_admission(cfg.admission_params)
        self.pipeline = RequestPipeline(
            self.router, self.admission, predictor, admission_enabled=cfg.admission
        )
        self.ledger = self.pipeline.ledger
        self.control_inputs = ControlInputs(
            tenant_priorities={t: s.priority for t, s in slas.items()}
        )
        self.decisions: list[Decision] | None = None
        """Every admission decision in order, when a caller sets a list here (tests)."""
        self.buckets = LocalBuckets()
        self.slots_conc = LocalSlots()
        self.slots: dict[str, Slot] = {}
        self.retired: list[Slot] = []
        self.snapshots: dict[str, WorkerSnapshot] = {}
        self.view = ClusterView(
            workers=self.snapshots,
            inflight=self.ledger.inflight,
            pending_prefill_tokens=self.ledger.pending_prefill_tokens,
            stale_after_s=max(2.0, 4 * cfg.publish_interval_s),
        )
        self.live: dict[str, _Live] = {}
        """Requests dispatched to an engine."""
        self.held: dict[str, _Live] = {}
        self._displaced = False
        """Requests in the admission queue (their order is the ledger's)."""
        self.records: list[RequestRecord] = []
        self.heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._next_id = {r.value: 0 for r in Role}
        self._next_arrival_s = float("inf")
        self._next_refresh_s = -1.0
        self._steps = 0
        self._ticks = 0
        self._now = 0.0
        self.scale_events: list[tuple[float, str, int]] = []
        for role, n in cfg.shape.counts().items():
            for _ in range(n):
                self._add_slot(role, 0.0, 0.0)

    # ---- cluster membership ----
    def _add_slot(self, role: str, now_s: float, ready_s: float) -> Slot:
        k = self._next_id[role]
        self._next_id[role] = k + 1
        wid = f"{role[0]}{k}"
        slot = Slot(wid, role, self.cfg.profile, self.cfg.engine, now_s, ready_s)
        self.slots[wid] = slot
        self.snapshots[wid] = slot.snapshot(self.cfg.cluster, self.cfg.model, now_s)
        self.view.pools = build_pools(self.snapshots)
        return slot

    def _remove_slot(self, slot: Slot, now_s: float) -> None:
        slot.stopped_s = now_s
        self.retired.append(slot)
        del self.slots[slot.id]
        del self.snapshots[slot.id]
        self.view.pools = build_pools(self.snapshots)

    def replicas(self) -> dict[str, int]:
        """Workers per role that exist (draining included), as an actuator counts them."""
        out: dict[str, int] = {}
        for s in self.slots.values():
            out[s.role] = out.get(s.role, 0) + 1
        return out

    # ---- events ----
    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, self._seq, kind, payload))

    def _kick(self, slot: Slot, now_s: float) -> None:
        if slot.pending:
            return
        t = slot.engine.next_event_s()
        if t is not None:
            slot.pending = True
            self._push(max(t, now_s), _WAKE, slot)

    def _horizon(self, slot: Slot) -> float:
        h = self._next_arrival_s
        if slot.role == Role.DECODE.value:
            for s in self.slots.values():
                if s.role == Role.PREFILL.value and s.step_end_s < h:
                    h = s.step_end_s
        return h

    def _step(self, slot: Slot, now_s: float) -> None:
        res = slot.engine.step(now_s, self._horizon(slot))
        if res is None:
            slot.pending = False
            slot.step_end_s = float("inf")
            t = slot.engine.next_event_s()
            if t is not None and t > now_s:
                slot.pending = True
                self._push(t, _WAKE, slot)
            return
        self._steps += res.num_steps
        slot.step_end_s = res.end_s
        self._push(res.end_s, _DONE, (slot, res))

    def _on_done(self, slot: Slot, res: StepResult) -> None:
        now = res.end_s
        for rid in res.first_tokens:
            lv = self.live.get(rid)
            if lv is not None and (slot.role != Role.PREFILL.value):
                self._first_token(lv)
        for fin in res.finished:
            lv = self.live.get(fin.request_id)
            if lv is None:
                continue
            if slot.role == Role.PREFILL.value:
                self._handoff(lv, slot, fin, now)
            else:
                self._complete(lv, slot, fin)
        if slot.draining and not slot.engine.has_unfinished:
            slot.pending = False
            self._remove_slot(slot, now)
            self._release(now)
            return
        self._step(slot, now)
        if self.held and (res.first_tokens or res.finished):
            self._release(now)

    # ---- request lifecycle ----
    def _first_token(self, lv: _Live) -> None:
        self.ledger.first_token(lv.req.request_id)

    def _handoff(self, lv: _Live, pslot: Slot, fin: FinishedRequest, now_s: float) -> None:
        """Prefill done: the decode worker pulls the KV and continues the request."""
        d = lv.decision
        assert d is not None
        self.ledger.prefill_done(lv.req.request_id)
        lv.outcome.cached_tokens = fin.cached_tokens
        lv.outcome.preemptions += fin.num_preemptions
        dslot = self.slots.get(d.decode)
        if dslot is None:  # decode worker went away meanwhile: count as a failure
            self._fail(lv, "decode_worker_gone", d.decode)
            return
        tr = lv.trace
        lv.on = dslot.id
        dslot.engine.add_request(
            SimRequest(
                fin.request_id,
                tr.prompt_tokens,
                tr.output_tokens,
                hash_ids=tr.hash_ids or None,
                remote_prefill_tokens=tr.prompt_tokens,
            ),
            now_s,
        )
        self._kick(dslot, now_s)

    def _complete(self, lv: _Live, slot: Slot, fin: FinishedRequest) -> None:
        o = lv.outcome
        self.ledger.finish(fin.request_id)
        del self.live[fin.request_id]
        self.slots_conc.release(o.tenant, fin.request_id)
        o.status = OK
        o.ttft_s = None if fin.first_token_s is None else fin.first_token_s - o.arrival_s
        o.tpot_s = fin.tpot_s
        o.e2e_s = fin.finish_s - o.arrival_s
        o.met = lv.sla.judge(
            None if o.ttft_s is None else o.ttft_s * 1000.0,
            None if o.tpot_s is None else o.tpot_s * 1000.0,
            o.e2e_s * 1000.0,
            o.status,
        ).met
        d = lv.decision
        if d is not None and d.prefill is None:
            o.cached_tokens = fin.cached_tokens
        o.preemptions += fin.num_preemptions
        self._record(lv, "ok")

    def _fail(self, lv: _Live, reason: str, worker: str = "") -> None:
        o = lv.outcome
        self.live.pop(str(o.index), None)
        self.ledger.finish(str(o.index))
        self.slots_conc.release(o.tenant, str(o.index))
        o.status, o.reason = FAILED, reason
        self._record(lv, "error")

    def _record(self, lv: _Live, outcome: str) -> None:
        if self.control is None:
            return
        o = lv.outcome
        d = lv.decision
        self.records.append(
            RequestRecord(
                request_id=str(o.index),
                tenant=o.tenant,
                model=self.cfg.model,
                arrival_ms=int(o.arrival_s * 1000),
                outcome=outcome,
                prefill_worker=(d.prefill or "") if d else "",
                decode_worker=d.decode if d else "",
                prompt_tokens=o.prompt_tokens,
                output_tokens=o.output_tokens if outcome == "ok" else 0,
                cached_tokens=o.cached_tokens,
                predicted_ttft_ms=d.predicted_ttft_ms if d else None,
                ttft_ms=None if o.ttft_s is None else o.ttft_s * 1000,
                tpot_ms=None if o.tpot_s is None else o.tpot_s * 1000,
                e2e_ms=None if o.e2e_s is None else o.e2e_s * 1000,
                sla_met=o.met,
                reason=o.reason,
            )
        )

    def _refresh(self, now_s: float) -> None:
        if now_s < self._next_refresh_s:
            return
        cl, model = self.cfg.cluster, self.cfg.model
        for wid, slot in self.slots.items():
            self.snapshots[wid] = slot.snapshot(cl, model, now_s)
        self._next_refresh_s = now_s + self.cfg.publish_interval_s
        self.telemetry_changed(now_s)

    def telemetry_changed(self, now_s: float) -> None:
        """New telemetry: held requests are re-judged, as the gateway's listener wakes them."""
        if self.held:
            self._rejudge(now_s)

    def _arrive(self, tr: TraceRequest, tenant: str, now_s: float) -> Outcome:
        o = self._arrive_one(tr, tenant, now_s)
        rid = str(tr.index)
        gone = rid not in self.live and rid not in self.held
        if self.held and (gone or self._displaced):
            # a refused request's (or a displaced one's) exit wakes the queue, as live
            self._displaced = False
            self._rejudge(now_s)
        return o

    def _arrive_one(self, tr: TraceRequest, tenant: str, now_s: float) -> Outcome:
        sla = self.slas[tenant]
        o = Outcome(tr.index, tenant, tr.arrival_s, tr.prompt_tokens, tr.output_tokens)
        rid = str(tr.index)
        req = RouteRequest(
            request_id=rid,
            tenant=tenant,
            model=self.cfg.model,
            prompt_tokens=tr.prompt_tokens,
            max_tokens=tr.output_tokens,
            priority=sla.priority,
            ttft_target_ms=sla.ttft_ms,
            itl_target_ms=sla.itl_ms,
            block_hashes=tr.hash_ids,
        )
        lv = _Live(tr, o, sla, req)
        self.pipeline.arrive(req, now_s)
        prof = self.cfg.profile
        total = tr.prompt_tokens + tr.output_tokens
        if total > (self.cfg.engine.max_model_len or prof.max_model_len) or total > (
            self.cfg.engine.kv_capacity_tokens or prof.kv_capacity_tokens
        ):
            o.status, o.reason = FAILED, "exceeds_max_model_len"
            self._record(lv, "error")
            return o
        if not self._rate_ok(tenant, sla, tr, now_s, rid):
            o.status, o.reason = REJECTED, "rate_limited"
            self._record(lv, "rejected")
            return o
        self._refresh(now_s)
        self._place(lv, now_s, held=False)
        return o

    def _place(self, lv: _Live, now_s: float, held: bool) -> bool:
        """Judge one request and carry out the pipeline's answer; False = it stays (or
        goes) in the admission queue. ``held``: it is already there (a release)."""
        req, o, tr = lv.req, lv.outcome, lv.trace
        tenant, rid = req.tenant, req.request_id
        dec = self.pipeline.admit(req, self.view, now_s, self.control_inputs)
        if self.decisions is not None and not (dec.held and held):
            self.decisions.append(dec)  # as the gateway logs: a re-hold is no new decision
        if dec.displace is not None:
            self._withdraw(dec.displace, now_s)
        if dec.held:
            if not held:
                self.held[rid] = lv
                assert dec.hold_until_s is not None
                self._push(dec.hold_until_s, _HOLD, None)
            return False
        self.held.pop(rid, None)
        lv.decision = dec.route
        if not dec.admitted:
            self.slots_conc.release(tenant, rid)
            o.status, o.reason = REJECTED, dec.verdict.reason
            self._record(lv, "rejected")
            return True
        d = dec.route
        assert d is not None
        lv.uncached = max(0, tr.prompt_tokens - d.cached_tokens)
        self.live[rid] = lv
        first = d.prefill if d.prefill is not None else d.decode
        slot = self.slots[first]
        lv.on = first
        slot.engine.add_request(
            SimRequest(
                rid,
                tr.prompt_tokens,
                1 if d.prefill is not None else tr.output_tokens,
                hash_ids=tr.hash_ids or None,
                remote_decode=d.prefill is not None,
            ),
            now_s,
        )
        self._kick(slot, now_s)
        return True

    def _withdraw(self, rid: str, now_s: float) -> None:
        """Take a displaced request back from its worker and refuse it (the pipeline has
        released its bookkeeping already)."""
        vl = self.live.pop(rid, None)
        if vl is None:
            return
        slot = self.slots.get(vl.on)
        if slot is not None:
            slot.engine.abort(rid, now_s)
        self.slots_conc.release(vl.req.tenant, rid)
        self._displaced = True
        vl.outcome.status, vl.outcome.reason = REJECTED, "displaced"
        self._record(vl, "rejected")

    def _release(self, now_s: float) -> None:
        """Held requests past their deadline leave (429 ``queue_timeout``); the rest are
        re-judged best priority first until one still may not go."""
        if not self.held:
            return
        self._refresh(now_s)
        for gone in self.ledger.expired(now_s):
            lv = self.held.pop(gone)
            self.ledger.finish(gone)
            self.slots_conc.release(lv.req.tenant, gone)
            lv.outcome.status, lv.outcome.reason = REJECTED, "queue_timeout"
            self._record(lv, "rejected")
        self._rejudge(now_s)

    def _rejudge(self, now_s: float) -> None:
        """Held requests, best first, until one still may not go (head of line)."""
        while (best := self.ledger.best_held()) is not None and self._place(
            self.held[best], now_s, held=True
        ):
            pass

    def _rate_ok(
        self, tenant: str, sla: TenantSLA, tr: TraceRequest, now_s: float, rid: str
    ) -> bool:
        rl = sla.rate_limit
        if rl.rpm or rl.tpm:
            now_ms = int(now_s * 1000)
            for spec in bucket_specs(sla, estimate_tokens(tr.prompt_tokens, tr.output_tokens)):
                if not self.buckets.take(tenant, spec, now_ms).allowed:
                    return False
        if sla.max_concurrency is not None:
            return self.slots_conc.acquire(tenant, rid, sla.max_concurrency)
        return True

    # ---- control ----
    def _tick(self, now_s: float) -> None:
        assert self.control is not None
        self._ticks += 1
        self._refresh(now_s)
        out = self.control.tick(now_s, dict(self.snapshots), self.records, self.replicas())
        self.records = []
        self.view.route_weights = dict(out.route_weights)
        self.control_inputs.admit_fractions = dict(out.admit)
        self.view.draining = frozenset(w for w in out.draining if w in self.slots)
        if out.desired is not None:
            self._scale(out.desired, out.remove, now_s)
        nxt = out.next_tick_s if out.next_tick_s else self.cfg.control_interval_s
        if self.live or self._next_arrival_s < float("inf"):
            self._push(now_s + max(0.05, nxt), _TICK, None)

    def _scale(
        self, desired: Mapping[str, int], remove: Mapping[str, tuple[str, ...]], now_s: float
    ) -> None:
        """The local actuator's semantics on virtual workers: stop exactly the workers the
        planner drained, drain the newest while above target, start new ones (ready after
        ``scale_up_delay_s``) while below it, never past the GPU budget."""
        budget = self.cfg.gpu_budget
        for role, want in sorted(desired.items()):
            for w in remove.get(role, ()):
                slot = self.slots.get(w)
                if slot is not None and slot.role == role:
                    self._stop(slot, now_s)
            mine = [s for s in self.slots.values() if s.role == role and not s.draining]
            while len(mine) > max(1, want):
                slot = max(mine, key=lambda s: (s.started_s, s.id))
                mine.remove(slot)
                slot.draining = True
                if not slot.engine.has_unfinished:
                    self._stop(slot, now_s)
                self.scale_events.append((now_s, role, len(mine)))
            while len(mine) < want and (budget is None or len(self.slots) < budget):
                mine.append(self._add_slot(role, now_s, now_s + self.cfg.scale_up_delay_s))
                self.scale_events.append((now_s, role, len(mine)))
        self.view.draining = frozenset(
            {w for w in self.view.draining if w in self.slots}
            | {w for w, s in self.slots.items() if s.draining}
        )

    def _stop(self, slot: Slot, now_s: float) -> None:
        """Stop a worker now; requests still on it fail (as a killed process's would)."""
        for lv in [lv for lv in self.live.values() if lv.on == slot.id]:
            self._fail(lv, "worker_stopped", slot.id)
        self._remove_slot(slot, now_s)

    # ---- main loop ----
    def run(self) -> RunResult:
        wall0 = time.perf_counter()
        reqs = self.trace.requests
        tenants = self.tenants
        outcomes: list[Outcome] = []
        heap = self.heap
        n = len(reqs)
        i = 0
        if self.control is not None:
            self._push(0.0, _TICK, None)
        self._next_arrival_s = reqs[0].arrival_s if n else float("inf")
        every = max(1, n // 200)
        while True:
            t_ev = heap[0][0] if heap else float("inf")
            if i < n and reqs[i].arrival_s <= t_ev:
                tr = reqs[i]
                now = tr.arrival_s
                i += 1
                self._next_arrival_s = reqs[i].arrival_s if i < n else float("inf")
                outcomes.append(self._arrive(tr, tenants[tr.index], now))
                if self.progress is not None and i % every == 0:
                    self.progress(i)
                continue
            if not heap:
                break
            now, _, kind, payload = heapq.heappop(heap)
            if kind == _DONE:
                slot, res = payload
                if slot.id in self.slots:
                    self._on_done(slot, res)
            elif kind == _WAKE:
                slot = payload
                if slot.id in self.slots:
                    self._step(slot, now)
            elif kind == _HOLD:
                self._release(now)
            else:
                if i >= n and not self.live:
                    continue
                self._tick(now)
            self._now = now
        end = max(self._now, reqs[-1].arrival_s if n else 0.0)
        for lv in list(self.live.values()):  # cannot happen unless an engine wedges
            self._fail(lv, "unfinished")
        if self.progress is not None:
            self.progress(n)
        gpu_s = sum(s.gpu_seconds(end) for s in self._all_slots())
        return RunResult(
            policy=self.cfg.policy,
            outcomes=sorted(outcomes, key=lambda o: o.index),
            gpu_seconds=gpu_s,
            sim_end_s=end,
            wall_s=time.perf_counter() - wall0,
            engine_steps=self._steps,
            control_ticks=self._ticks,
            scale_events=self.scale_events,
        )

    def _all_slots(self) -> list[Slot]:
        return list(self.slots.values()) + self.retired
