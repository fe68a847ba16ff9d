"""Data contracts shared by every process: worker snapshots, tenant SLAs, request records.

These are plain data so the pure policy core, the live drivers and the replay driver
can all speak them. Units are in the field names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

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


class TenantSLA(BaseModel):
    """Per-tenant SLA spec (DESIGN.md). A request meets it when TTFT ≤ ttft_ms and
    TPOT ≤ itl_ms (and e2e ≤ e2e_ms where set), measured at the gateway."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    priority: Priority = Priority.STANDARD
    ttft_ms: float = Field(default=2000.0, gt=0)
    itl_ms: float = Field(default=50.0, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)
    objective: float = Field(default=0.99, gt=0, le=1)
    rate_limit: RateLimit = RateLimit()
    max_concurrency: int | None = Field(default=None, ge=1)


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
