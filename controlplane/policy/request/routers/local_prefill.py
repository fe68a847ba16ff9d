"""Conditional disaggregation ("local prefill"): when a decode worker prefills itself.

When the prefill pool is the bottleneck the decode workers sit mostly idle, so, as
Dynamo's disagg router and llm-d's selective P/D do, a decode worker may compute a
prompt itself in chunks mixed into its decode steps (``RouteDecision`` with
``prefill=None``, ``mode="local"``). Modes ``never`` / ``threshold`` (Dynamo's rule) /
``predictive`` (``sla``'s default: local only when P/D's TTFT is at risk and the
decode worker's TPOT and KV stay within their targets). The rule, its predictions and
its state: ``docs/local-prefill.md``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.predictor import (
    DEFAULT_STEP_TOKEN_BUDGET,
    ItlQuery,
    LatencyPredictor,
    ProfilePredictor,
    TtftQuery,
    predicted_batch,
    queued_prompt_tokens,
    step_token_budget,
)
from controlplane.policy.request.prefix import PrefixIndex
from controlplane.policy.types import ClusterView, RouteDecision, RouteRequest
from controlplane.profiles import Profile
from controlplane.schemas import WorkerSnapshot

Mode = Literal["never", "threshold", "predictive"]

POLICY_DEFAULT_MODE: dict[str, Mode] = {"sla": "predictive"}
"""``mode`` when the config leaves it unset; policies not listed default to ``never``."""


class LocalPrefillParams(BaseModel):
    """Router-level params, under the ``local-prefill`` key of ``RouterConfig.params``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Mode | None = None
    """None = the policy's default (``POLICY_DEFAULT_MODE``)."""
    # threshold (Dynamo's disagg router defaults)
    max_local_prefill_length: int = Field(default=1000, ge=0)
    """threshold: uncached prompt tokens up to this are prefilled on the decode worker."""
    max_prefill_queue_size: int | None = Field(default=2, ge=1)
    """threshold: at this many not-started requests in the prefill pool, every prompt
    goes local (None = the queue is not looked at)."""
    # predictive
    risk_ratio: float = Field(default=0.25, ge=0)
    """Look at local prefill only when P/D's predicted TTFT exceeds this x the target."""
    min_gain: float = Field(default=0.1, ge=0, lt=1)
    """Local must be predicted at least this fraction faster than P/D."""
    ttft_margin: float = Field(default=0.9, gt=0, le=1)
    """Local's predicted TTFT must be within this x the TTFT target."""
    itl_margin: float = Field(default=0.8, gt=0, le=1)
    """Predicted TPOT on the decode worker must be within this x the ITL target."""
    spread_tokens: int | None = Field(default=None, ge=2)
    """Output tokens a stall is spread over (a short request's); None = learned from
    recent requests' max_tokens at ``spread_quantile``."""
    spread_quantile: float = Field(default=0.25, ge=0, le=1)
    window_ms: float = Field(default=500.0, gt=0)
    """Decay time of the recent-local-prefill level behind the duty-cycle estimate."""
    max_duty: float = Field(default=0.9, gt=0, lt=1)
    """Cap on the duty-cycle estimate (keeps step / (1 - f) finite)."""
    itl_target_memory_s: float = Field(default=10.0, ge=0)
    """How long a worker remembers the tightest ITL target routed to it."""
    kv_max_usage: float = Field(default=0.9, gt=0, le=1)
    default_capacity_tokens: int = Field(default=131_072, ge=1)
    """KV capacity of a worker whose snapshot does not report one."""
    max_candidates: int = Field(default=4, ge=1)
    """Decode workers examined per request (the decode pick first, then a rotating
    window), so the rule stays O(1) in the pool size."""


def kv_room(snap: WorkerSnapshot, need_tokens: float, params: LocalPrefillParams) -> bool:
    """The rule's KV guard: the worker stays under ``kv_max_usage`` with ``need_tokens``
    (prompt + output) more. Shared with the controller's outlook (``local_spare``)."""
    kv_max = params.kv_max_usage
    cap = snap.kv_capacity_tokens or params.default_capacity_tokens
    return snap.kv_usage < kv_max and cap * (kv_max - snap.kv_usage) >= need_tokens


@dataclass(frozen=True, slots=True)
class LocalChoice:
    """A decode worker that should compute the prompt itself, and why."""

    worker: str
    cached_tokens: int
    reason: str
    predicted_ttft_ms: float | None = None
    """None = not predicted by the rule (threshold): the Router predicts it."""
    predicted_itl_ms: float | None = None


_RING = 256
_REQUANTILE_EVERY = 64


class LocalPrefill:
    """The rule plus the little state the predictive mode keeps between requests."""

    def __init__(
        self,
        params: LocalPrefillParams,
        mode: Mode,
        *,
        predictor: LatencyPredictor,
        index: PrefixIndex,
        block_tokens: int = 16,
        assumed_prompt_tokens: int = 512,
    ) -> None:
        self.params = params
        self.mode: Mode = mode
        self.predictor = predictor
        self.index = index
        self.block_tokens = block_tokens
        self.assumed_prompt_tokens = assumed_prompt_tokens
        self._level: dict[str, tuple[float, float]] = {}
        """decode worker → (local prefill ms sent, decayed to time t; t)."""
        self._tight: dict[str, tuple[float, float]] = {}
        """decode worker → (tightest ITL target routed there, valid until s)."""
        self._recent_max_tokens: deque[int] = deque(maxlen=_RING)
        self._seen = 0
        self._spread = 0
        self._rot = 0
        self._steps: dict[int, tuple[int, float]] = {}
        self._last: tuple[str, str, float] | None = None
        """(request id, worker, prefill ms) of the last local choice, for ``commit``."""

    # ---- decision ----
    def decide(
        self,
        req: RouteRequest,
        view: ClusterView,
        pd: RouteDecision,
        decode_ids: Collection[str],
        prefill_ids: Sequence[str],
        now_s: float,
    ) -> LocalChoice | None:
        """A decode worker to prefill on instead of ``pd``, or None to stay P/D.
        ``decode_ids``: the decode candidates that passed the decode profile's filters."""
        if self.mode == "predictive":
            return self._predictive(req, view, pd, decode_ids, now_s)
        if self.mode == "threshold":
            return self._threshold(req, view, pd, prefill_ids)
        return None

    def _cached(self, req: RouteRequest, worker: str) -> int:
        if not req.block_hashes:
            return 0
        depth = self.index.overlap(req.block_hashes).get(worker, 0)
        return min(req.prompt_tokens, depth * self.block_tokens)

    def _threshold(
        self, req: RouteRequest, view: ClusterView, pd: RouteDecision, prefill_ids: Sequence[str]
    ) -> LocalChoice | None:
        p = self.params
        w = pd.decode
        cached = self._cached(req, w)
        uncached = req.prompt_tokens - cached
        if uncached <= p.max_local_prefill_length:
            why = f"uncached {uncached} <= {p.max_local_prefill_length}"
            return LocalChoice(w, cached, f"local-prefill threshold: {why}")
        if p.max_prefill_queue_size is None:
            return None
        inflight, workers = view.inflight, view.workers
        queue = 0
        for pw in prefill_ids:
            s = workers[pw]
            queue += max(s.waiting, inflight.get(pw, 0) - s.running, 0)
        if queue >= p.max_prefill_queue_size:
            why = f"prefill queue {queue} >= {p.max_prefill_queue_size}"
            return LocalChoice(w, cached, f"local-prefill threshold: {why}")
        return None

    def _step_shape(self, worker_profile: Profile | None) -> tuple[int, float]:
        """(step token budget, mixed-step base ms) of a worker's step model."""
        if worker_profile is None:
            return DEFAULT_STEP_TOKEN_BUDGET, 0.0
        key = id(worker_profile)
        got = self._steps.get(key)
        if got is None:
            got = self._steps[key] = (
                step_token_budget(worker_profile),
                worker_profile.base_step_ms,  # a mixed step pays it once
            )
        return got

    def spread(self, req: RouteRequest) -> int:
        """Output tokens a stall is assumed spread over (see ``spread_tokens``)."""
        if self.params.spread_tokens is not None:
            return self.params.spread_tokens
        return max(2, self._spread or req.max_tokens)

    def level_ms(self, worker: str, now_s: float) -> float:
        """Recent local prefill ms sent to ``worker``, decayed over ``window_ms``."""
        got = self._level.get(worker)
        if got is None:
            return 0.0
        ms, t = got
        dt = max(0.0, now_s - t) * 1000.0
        return ms * math.exp(-dt / self.params.window_ms)

    def _itl_target(self, req: RouteRequest, worker: str, now_s: float) -> float:
        got = self._tight.get(worker)
        if got is not None and now_s <= got[1]:
            return min(req.itl_target_ms, got[0])
        return req.itl_target_ms

    def _predictive(
        self,
        req: RouteRequest,
        view: ClusterView,
        pd: RouteDecision,
        decode_ids: Collection[str],
        now_s: float,
    ) -> LocalChoice | None:
        p = self.params
        target = req.ttft_target_ms
        pd_ttft = pd.predicted_ttft_ms
        if pd_ttft is None or pd_ttft <= p.risk_ratio * target:
            return None  # P/D is safe: the common case costs one comparison
        # local must come in strictly below this: a tie with P/D stays P/D
        ceiling = min(p.ttft_margin * target, (1.0 - p.min_gain) * pd_ttft)
        pred = self.predictor
        prof_of: Callable[[WorkerSnapshot], Profile] | None = None
        rate_of: Callable[[Profile], float] = _no_rate
        if isinstance(pred, ProfilePredictor):
            prof_of, rate_of = pred.profile_for, pred.queue_rate
        overlap = self.index.overlap(req.block_hashes) if req.block_hashes else {}
        prompt = req.prompt_tokens
        need = prompt + req.max_tokens
        ctx = prompt + req.max_tokens // 2
        gaps = self.spread(req) - 1
        workers, bt, assumed = view.workers, self.block_tokens, self.assumed_prompt_tokens
        # candidates mostly share a step model: predict each (model, cached) prefill and
        # (model, batch) step once per request
        prefills: dict[tuple[object, int], float] = {}
        steps: dict[tuple[object, int], float] = {}
        best: tuple[str, int, float, float, float] | None = None  # w, cached, ttft, tpot, ms
        best_ttft = ceiling
        for w in self._candidates(pd.decode, decode_ids):
            s = workers[w]
            if not kv_room(s, need, p):
                continue
            queued = queued_prompt_tokens(s, view, assumed)
            prof = prof_of(s) if prof_of is not None else None
            if prof is not None:  # ProfilePredictor.drain_ms without the second lookup
                queue_ms = queued / rate_of(prof) if queued > 0 else 0.0
            else:
                queue_ms = pred.drain_ms(s, queued)
            if queue_ms >= best_ttft:
                continue
            key: object = id(prof) if prof is not None else w
            cached = min(prompt, overlap.get(w, 0) * bt) if overlap else 0
            this_ms = prefills.get((key, cached))
            if this_ms is None:
                q = TtftQuery(worker=s, prompt_tokens=prompt, cached_tokens=cached)
                this_ms = prefills[(key, cached)] = pred.ttft_ms(q)
            batch = predicted_batch(s, view)
            step_ms = steps.get((key, batch))
            if step_ms is None:
                iq = ItlQuery(worker=s, batch=batch, context_tokens=ctx)
                step_ms = steps[(key, batch)] = pred.itl_ms(iq)
            ttft = queue_ms + this_ms
            if batch > 1:  # decodes running: each prefill chunk shares a step with them
                budget, base = self._step_shape(prof)
                chunks = -(-(queued + prompt - cached) // max(1, budget - batch + 1))
                ttft += chunks * max(0.0, step_ms - base)
            if ttft >= best_ttft:
                continue
            level = self.level_ms(w, now_s) if self._level else 0.0
            duty = min(p.max_duty, (level + this_ms) / p.window_ms)
            tpot = max(step_ms / (1.0 - duty), step_ms + (queue_ms + this_ms) / gaps)
            if tpot > p.itl_margin * self._itl_target(req, w, now_s):
                continue
            best = (w, cached, ttft, tpot, this_ms)
            best_ttft = ttft
        if best is None:
            return None
        w, cached, ttft, tpot, this_ms = best
        self._last = (req.request_id, w, this_ms)
        limit = p.itl_margin * self._itl_target(req, w, now_s)
        why = (
            f"local-prefill predictive: pd ttft {pd_ttft:.0f} > {p.risk_ratio:g}x{target:.0f};"
            f" local ttft {ttft:.0f} on {w}, tpot {tpot:.1f} <= {limit:.1f}"
        )
        return LocalChoice(w, cached, why, ttft, tpot)

    def _candidates(self, first: str, cands: Collection[str]) -> list[str]:
        """The decode pick first, then the others (a rotating window when there are many)."""
        k = self.params.max_candidates
        n = len(cands)
        if n <= k:
            return [first, *(w for w in cands if w != first)]
        ids = cands if isinstance(cands, list) else list(cands)
        rot = self._rot = (self._rot + 1) % n
        window = ids[rot : rot + k] + ids[: max(0, rot + k - n)]
        return [first, *(w for w in window if w != first)][:k]

    # ---- state ----
    def commit(
        self, req: RouteRequest, decision: RouteDecision, view: ClusterView, now_s: float
    ) -> None:
        """A decision was dispatched: update recent local prefill, ITL targets, spread."""
        if self.mode != "predictive":
            return
        w = decision.decode
        memory = self.params.itl_target_memory_s
        tight = self._tight.get(w)
        if tight is None or req.itl_target_ms <= tight[0] or now_s > tight[1]:
            self._tight[w] = (req.itl_target_ms, now_s + memory)
        if self.params.spread_tokens is None:
            self._observe_tokens(req.max_tokens)
        if decision.mode != "local":
            return
        last = self._last
        if last is not None and last[0] == req.request_id and last[1] == w:
            ms = last[2]
        else:  # a local decision the rule did not just make (threshold, a retry)
            snap = view.workers.get(w)
            ms = 0.0
            if snap is not None:
                ms = self.predictor.ttft_ms(
                    TtftQuery(snap, req.prompt_tokens, decision.cached_tokens)
                )
        self._level[w] = (self.level_ms(w, now_s) + ms, now_s)

    def _observe_tokens(self, max_tokens: int) -> None:
        self._recent_max_tokens.append(max_tokens)
        self._seen += 1
        if self._seen % _REQUANTILE_EVERY == 1 or self._spread == 0:
            srt = sorted(self._recent_max_tokens)
            self._spread = srt[min(len(srt) - 1, int(self.params.spread_quantile * len(srt)))]


def _no_rate(model: Profile) -> float:
    raise AssertionError("queue rate asked without a ProfilePredictor")
