"""Latency prediction per worker: a Protocol plus a profile-based default.

TTFT = queue delay (prompt tokens waiting ahead / prefill throughput) + prefill time
of the uncached part of the prompt. ITL = decode step time at the predicted batch
and context. Both come from a ``controlplane.profiles.Profile``, the step-time model
the sim engine runs on (the gateway loads one with ``--profile``; without it, the
``cpu-tiny-fixture`` table). The queries are explicit feature records so a calibrated
predictor (online regression on the requests stream) can implement the same
Protocol and be swapped in without touching routers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from controlplane.policy.types import ClusterView
from controlplane.profiles import CPU_TINY_FIXTURE, Profile
from controlplane.schemas import WorkerSnapshot

_THROUGHPUT_PROBES = (256, 512, 1024, 2048, 4096, 8192)


def prefill_tokens_per_ms(model: Profile) -> float:
    """Best prefill throughput of a step model over chunk sizes (an upper limit)."""
    return max(t / max(model.prefill_ms(t), 1e-6) for t in _THROUGHPUT_PROBES)


def busy_prefill_tokens_per_ms(model: Profile) -> float:
    """Queue drain rate: a worker with a queue fills every step to its token budget, so
    it drains at the throughput of a full-budget step, not at the best chunk size's
    (13 % apart on the H100 table: 41 vs 47 tokens/ms at 8,192 vs 2,048 tokens; priced
    at the peak, predicted TTFT ran ~260 ms short near a 2 s target in replay)."""
    budget = step_token_budget(model)
    return budget / max(model.prefill_ms(budget), 1e-6)


@dataclass(frozen=True, slots=True)
class TtftQuery:
    """Features of one (request, worker) pair for a TTFT prediction."""

    worker: WorkerSnapshot
    prompt_tokens: int
    cached_tokens: int = 0
    queued_prompt_tokens: int = 0
    """Prompt tokens predicted to be prefilled on this worker before this request."""


@dataclass(frozen=True, slots=True)
class ItlQuery:
    """Features of one (request, worker) pair for a per-token decode latency prediction."""

    worker: WorkerSnapshot
    batch: int
    """Running requests on the worker once this one joins."""
    context_tokens: int


@runtime_checkable
class LatencyPredictor(Protocol):
    """What routers and admission need from a predictor; all times in ms."""

    def ttft_ms(self, q: TtftQuery) -> float: ...
    def itl_ms(self, q: ItlQuery) -> float: ...
    def drain_ms(self, worker: WorkerSnapshot, queued_prompt_tokens: int) -> float:
        """Time for the worker to work through what is queued now (Retry-After hints)."""
        ...


class ProfilePredictorParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    assumed_prompt_tokens: int = Field(default=512, ge=1)
    """Prompt length assumed per waiting request when a snapshot lacks waiting_tokens."""
    queue_efficiency: float = Field(default=1.0, gt=0, le=1)
    """Fraction of the table's peak prefill throughput a busy worker really gets."""


class ProfilePredictor:
    """Predicts from a latency table, one per worker or model, else the default table."""

    def __init__(
        self,
        default: Profile = CPU_TINY_FIXTURE,
        params: ProfilePredictorParams | None = None,
        profiles: Mapping[str, Profile] | None = None,
    ) -> None:
        self.default = default
        self.params = params or ProfilePredictorParams()
        self.profiles = dict(profiles or {})
        self._tput: dict[int, float] = {}
        self._last_prefill: dict[tuple[int, int, int], float] = {}

    def profile_for(self, worker: WorkerSnapshot) -> Profile:
        p = self.profiles.get(worker.worker) or self.profiles.get(worker.model)
        return p or self.default

    def ttft_ms(self, q: TtftQuery) -> float:
        return self.ttft_of(q.worker, q.prompt_tokens, q.cached_tokens, q.queued_prompt_tokens)

    def ttft_of(
        self, worker: WorkerSnapshot, prompt_tokens: int, cached_tokens: int, queued: int
    ) -> float:
        """``ttft_ms`` from its fields, for hot paths that would build a query only to
        pass it here (the router's chosen-pair prediction)."""
        prof = self.profile_for(worker)
        return self._queue_ms(prof, queued) + self.prefill_part_ms(
            prof, prompt_tokens, cached_tokens
        )

    def prefill_part_ms(self, prof: Profile, prompt_tokens: int, cached_tokens: int) -> float:
        """The prefill term of ``ttft_ms`` (no queue), memoised: one request asks it
        for every worker, and vectorised scorers ask it once per distinct profile."""
        cached = min(cached_tokens, prompt_tokens)
        uncached = prompt_tokens - cached
        key = (id(prof), uncached, cached)
        prefill = self._last_prefill.get(key)
        if prefill is None:
            prefill = prof.prefill_ms(uncached, cached) if uncached > 0 else 0.0
            if len(self._last_prefill) > 256:
                self._last_prefill.clear()
            self._last_prefill[key] = prefill
        return prefill

    def queue_rate(self, prof: Profile) -> float:
        """Prompt tokens per ms a busy worker of this profile drains its queue at; the
        queue term of ``ttft_ms`` is ``queued / queue_rate`` (0 when nothing is queued)."""
        tput = self._tput.get(id(prof))
        if tput is None:
            tput = self._tput[id(prof)] = busy_prefill_tokens_per_ms(prof)
        return tput * self.params.queue_efficiency

    def itl_ms(self, q: ItlQuery) -> float:
        return self.itl_of(q.worker, q.batch, q.context_tokens)

    def itl_of(self, worker: WorkerSnapshot, batch: int, context_tokens: int) -> float:
        """``itl_ms`` from its fields (see ``ttft_of``)."""
        return self.profile_for(worker).decode_ms(batch, context_tokens)

    def drain_ms(self, worker: WorkerSnapshot, queued_prompt_tokens: int) -> float:
        return self._queue_ms(self.profile_for(worker), queued_prompt_tokens)

    def _queue_ms(self, prof: Profile, tokens: int) -> float:
        if tokens <= 0:
            return 0.0
        return tokens / self.queue_rate(prof)


def queue_ms_per_token(predictor: LatencyPredictor, worker: WorkerSnapshot) -> float:
    """How much sooner a request queued on ``worker`` starts per prompt token taken out of
    the queue ahead of it (``drain_ms`` is linear in the tokens)."""
    return predictor.drain_ms(worker, 1000) / 1000.0


def queued_prompt_tokens(
    snap: WorkerSnapshot, view: ClusterView, assumed_prompt_tokens: int = 512
) -> int:
    """Prompt tokens ahead of a new request: the worker's own report or the driver's
    count of what it sent and has not seen start, whichever is larger (telemetry lags)."""
    reported = (
        snap.waiting_tokens
        if snap.waiting_tokens is not None
        else snap.waiting * assumed_prompt_tokens
    )
    return max(reported, view.pending_prefill_tokens.get(snap.worker, 0))


def predicted_batch(snap: WorkerSnapshot, view: ClusterView) -> int:
    """Running requests once one more joins (driver in-flight covers telemetry lag)."""
    return max(snap.running, view.inflight.get(snap.worker, 0)) + 1


DEFAULT_STEP_TOKEN_BUDGET = 2048
"""vLLM V1's default ``max_num_batched_tokens``, for a profile without a positive one."""


def step_token_budget(model: Profile) -> int:
    """Tokens one engine step may schedule (chunked prefill's chunk plus the decodes)."""
    budget = model.max_num_batched_tokens
    return budget if budget > 0 else DEFAULT_STEP_TOKEN_BUDGET
