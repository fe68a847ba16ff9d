"""Data contracts shared by every process: worker snapshots, tenant SLAs, request records.

These are plain data so the pure policy core, the live drivers and the replay driver
can all speak them. Units are in the field names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field


class Role(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"
    BOTH = "both"


class Priority(StrEnum):
    PREMIUM = "premium"
    STANDARD = "standard"
    BATCH = "batch"

    @property
    def rank(self) -> int:
        """Higher rank = more important; used to shed the lowest first."""
        return {"premium": 2, "standard": 1, "batch": 0}[self.value]


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One telemetry sample of one worker, as published by its agent or vLLM plugin.

    Quantiles are over the last window (the deltas between two scrapes, or a
    short rolling window when a scrape saw no finished request). ``None`` means
    "no data in the window", never zero.
    """

    cluster: str
    worker: str
    role: str
    model: str
    url: str = ""
    up: bool = True
    kv_usage: float = 0.0
    running: int = 0
    waiting: int = 0
    waiting_tokens: int | None = None
    ttft_p50_ms: float | None = None
    ttft_p90_ms: float | None = None
    ttft_p99_ms: float | None = None
    itl_p50_ms: float | None = None
    itl_p90_ms: float | None = None
    itl_p99_ms: float | None = None
    prompt_tokens_per_s: float = 0.0
    gen_tokens_per_s: float = 0.0
    preemptions_per_s: float = 0.0
    prefix_hit_rate: float | None = None
    kv_capacity_tokens: int | None = None
    requests_finished_total: float = 0.0
    prompt_tokens_total: float = 0.0
    generation_tokens_total: float = 0.0
    source: str = "agent"
    ts_ms: int = 0
    seq: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def age_s(self, now_s: float) -> float:
        return max(0.0, now_s - self.ts_ms / 1000.0)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_redis(self) -> dict[str, str]:
        """Flat string mapping for a Redis hash / stream entry (None → empty string)."""
        out: dict[str, str] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "extra":
                out["extra"] = json.dumps(v, separators=(",", ":"))
            elif v is None:
                out[f.name] = ""
            elif isinstance(v, bool):
                out[f.name] = "1" if v else "0"
            else:
                out[f.name] = str(v)
        return out

    @classmethod
    def from_redis(cls, raw: dict[str, str] | dict[bytes, bytes]) -> WorkerSnapshot:
        d = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            s = d[f.name]
            t = str(f.type)
            if f.name == "extra":
                kwargs["extra"] = json.loads(s) if s else {}
            elif s == "" and "None" in t:
                kwargs[f.name] = None
            elif t.startswith("bool"):
                kwargs[f.name] = s in ("1", "true", "True")
            elif t.startswith("int"):
                kwargs[f.name] = int(float(s))
            elif t.startswith("float"):
                kwargs[f.name] = float(s)
            else:
                kwargs[f.name] = s
        return cls(**kwargs)


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rpm: int | None = Field(default=None, ge=1, description="requests per minute")
    tpm: int | None = Field(
        default=None, ge=1, description="tokens (prompt + max_tokens) per minute"
    )


class SlaJudgement(NamedTuple):
    """One request against its tenant's SLA: met per target, and ``met`` for all of them
    (``ttft``/``itl``/``met`` are the gateway's ``slo`` labels ``ttft``/``itl``/``all``).
    A NamedTuple (a third of a frozen dataclass's cost, on every request's path), so it
    is always truthy: read ``.met``, never ``if sla.judge(...)``."""

    ttft: bool
    itl: bool
    e2e: bool
    met: bool


_REFUSED = SlaJudgement(ttft=False, itl=False, e2e=False, met=False)


class TenantSLA(BaseModel):
    """Per-tenant SLA spec (DESIGN.md). A request meets it when TTFT ≤ ttft_ms and
    TPOT ≤ itl_ms (and e2e ≤ e2e_ms where set), measured at the gateway; ``judge`` is
    the one place that rule is written."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    priority: Priority = Priority.STANDARD
    ttft_ms: float = Field(default=2000.0, gt=0)
    itl_ms: float = Field(default=50.0, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)
    objective: float = Field(default=0.99, gt=0, le=1)
    rate_limit: RateLimit = RateLimit()
    max_concurrency: int | None = Field(default=None, ge=1)

    def judge(
        self, ttft_ms: float | None, tpot_ms: float | None, e2e_ms: float | None, outcome: str
    ) -> SlaJudgement:
        """The SLA rule, for every caller (gateway metrics and records, replay, breach
        labels, demo). Bounds are inclusive. A request whose ``outcome`` is not ``"ok"``
        (rejected, failed, cancelled) misses every target, ITL included: DESIGN.md's
        goodput counts refusals as misses, and a per-SLO label that passed them would let
        shedding load raise ITL attainment. An ok request with no TTFT (no first token
        was seen) misses TTFT; no TPOT (fewer than two output tokens) meets ITL, as
        ``vllm bench serve --goodput`` does; no e2e misses an e2e target when one is set."""
        if outcome != "ok":
            return _REFUSED
        ttft = ttft_ms is not None and ttft_ms <= self.ttft_ms
        itl = tpot_ms is None or tpot_ms <= self.itl_ms
        e2e = self.e2e_ms is None or (e2e_ms is not None and e2e_ms <= self.e2e_ms)
        return SlaJudgement(ttft, itl, e2e, ttft and itl and e2e)


DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished (or rejected/failed) request, written by the gateway to the
    ``requests`` stream so the controller can calibrate predictions and forecast load."""

    request_id: str
    tenant: str
    model: str
    arrival_ms: int
    outcome: str  # ok | rejected | error | cancelled
    prefill_worker: str = ""
    decode_worker: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    predicted_ttft_ms: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    queue_ms: float | None = None
    sla_met: bool | None = None
    reason: str = ""

    def to_redis(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = "" if v is None else ("1" if v is True else "0" if v is False else str(v))
        return out

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> RequestRecord:
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            s = raw[f.name]
            t = str(f.type)
            if s == "" and "None" in t:
                kwargs[f.name] = None
            elif t.startswith("bool"):
                kwargs[f.name] = s == "1"
            elif t.startswith("int"):
                kwargs[f.name] = int(float(s))
            elif t.startswith("float"):
                kwargs[f.name] = float(s)
            else:
                kwargs[f.name] = s
        return cls(**kwargs)
