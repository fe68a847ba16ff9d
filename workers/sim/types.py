"""Plain data crossing the engine boundary: config, requests in, step results out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine limits; ``None`` takes the profile's value (what the profile was measured with)."""

    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    kv_capacity_tokens: int | None = None
    block_size: int | None = None
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    hash_block_tokens: int = 512
    """Tokens covered by one Mooncake ``hash_id`` (512 in the Mooncake traces)."""
    kv_transfer_base_s: float = 0.0
    """Fixed decode-side delay before transferred KV is usable (handshake, RDMA setup)."""
    kv_transfer_s_per_token: float = 0.0
    """Per-token KV pull time on the decode side (0 = transfer is free, as in the profile)."""


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One request as the engine sees it: token counts, optional identity for prefix caching.

    ``prompt_token_ids`` (chained hashes of ``block_size`` blocks) or ``hash_ids``
    (Mooncake-style, one id per ``hash_block_tokens`` tokens) enable prefix-cache
    hits; with neither, the prompt never hits. ``remote_prefill_tokens`` > 0 marks a
    decode-side request whose prompt KV arrives from a prefill worker (skip prefill;
    the profile's ``kv_load`` term is paid by the step that admits it). A prefill-only
    request (P/D producer side) is ``max_tokens=1``; ``remote_decode`` marks that its
    KV is saved for a decode worker (the profile's ``kv_save`` term, per prefill chunk).
    """

    request_id: str
    prompt_tokens: int
    max_tokens: int
    prompt_token_ids: Sequence[int] | None = None
    hash_ids: Sequence[int] | None = None
    remote_prefill_tokens: int = 0
    remote_decode: bool = False


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """Everything the per-request vLLM histograms (and a replay report) need."""

    request_id: str
    reason: str  # length | abort
    arrival_s: float
    scheduled_s: float | None
    first_token_s: float | None
    finish_s: float
    prompt_tokens: int
    output_tokens: int
    max_tokens: int
    cached_tokens: int
    external_tokens: int
    num_preemptions: int

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.finish_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """Mean inter-token time after the first token (``vllm bench`` TPOT)."""
        if self.first_token_s is None or self.output_tokens < 2:
            return None
        return (self.finish_s - self.first_token_s) / (self.output_tokens - 1)

    @property
    def queue_s(self) -> float | None:
        return None if self.scheduled_s is None else self.scheduled_s - self.arrival_s


@dataclass(slots=True)
class StepResult:
    """What one engine iteration (or a fast-forwarded run of identical decode steps) did.

    All effects are visible at ``end_s``: every id in ``tokens`` produced
    ``num_steps`` tokens (1 unless fast-forwarded), ids in ``first_tokens`` produced
    their first token, ``finished`` requests left the engine, ``preempted`` ones
    went back to the waiting queue to be recomputed.
    """

    start_s: float
    end_s: float
    num_steps: int = 1
    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0
    tokens: list[str] = field(default_factory=list)
    first_tokens: list[str] = field(default_factory=list)
    finished: list[FinishedRequest] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s
