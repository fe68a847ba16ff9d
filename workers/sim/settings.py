"""``slaplane sim-worker`` settings: CLI flags over ``SLAPLANE_<FIELD>`` env over defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane.config import CommonSettings
from controlplane.schemas import Role
from workers.sim.types import EngineConfig


class SimWorkerSettings(CommonSettings):
    """Everything the simulated worker needs; engine limits default to the profile's."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    role: Role = Role.BOTH
    model: str | None = None
    """Served model name (default: the profile's model, e.g. ``tiny-llama`` for cpu-tiny)."""
    profile: str = "cpu-tiny"
    worker_id: str | None = None
    seed: int = 0
    time_scale: float = Field(default=1.0, gt=0)
    """Simulated seconds per wall second (10 = ten times faster than the profile)."""
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    kv_capacity_tokens: int | None = Field(default=None, ge=1)
    block_size: int | None = Field(default=None, ge=1)
    max_model_len: int | None = Field(default=None, ge=2)
    enable_prefix_caching: bool = True
    kv_transfer_base_ms: float = Field(default=0.0, ge=0)
    kv_transfer_us_per_token: float = Field(default=0.0, ge=0)
    default_max_tokens: int = Field(default=256, ge=1)
    """max_tokens when a request sets none (vLLM would use the rest of the context, but
    the sim never samples EOS, so that would generate thousands of tokens)."""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    kv_host: str = "localhost"
    """``remote_host`` advertised in prefill handles (NIXL side channel host)."""
    kv_port: int = Field(default=5600, ge=0, le=65535)
    fixed_created: int | None = None
    """Pin the ``created`` field of responses (byte-for-byte stream comparisons)."""
    error_rate: float = Field(default=0.0, ge=0, le=1)
    added_latency_ms: float = Field(default=0.0, ge=0)
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    hang_mode: Literal["before", "mid"] = "before"

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_num_seqs=self.max_num_seqs,
            kv_capacity_tokens=self.kv_capacity_tokens,
            block_size=self.block_size,
            max_model_len=self.max_model_len,
            enable_prefix_caching=self.enable_prefix_caching,
            kv_transfer_base_s=self.kv_transfer_base_ms / 1000.0,
            kv_transfer_s_per_token=self.kv_transfer_us_per_token / 1e6,
        )
