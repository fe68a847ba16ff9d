"""Agent settings: CLI flags over ``SLAPLANE_*`` env vars over these defaults."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, model_validator

from controlplane.config import CommonSettings
from controlplane.schemas import Role


class AgentSettings(CommonSettings):
    """Everything ``slaplane agent`` needs; env names are ``SLAPLANE_<FIELD>``."""

    worker_url: str = "http://127.0.0.1:8000"
    worker_id: str | None = None
    role: Role = Role.BOTH
    model: str | None = None
    interval_ms: int = Field(default=250, ge=20, le=60_000)
    scrape_timeout_ms: int | None = Field(default=None, ge=5)
    window_s: float = Field(default=5.0, gt=0)
    down_after_failures: int = Field(default=2, ge=1, le=100)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> AgentSettings:
        if self.scrape_timeout_ms is not None and self.scrape_timeout_ms >= self.interval_ms:
            raise ValueError("scrape_timeout_ms must be shorter than interval_ms")
        return self

    @property
    def interval_s(self) -> float:
        return self.interval_ms / 1000.0

    @property
    def timeout_s(self) -> float:
        """Default: 80 % of the interval, so a hung worker never delays the next tick."""
        ms = (
            self.scrape_timeout_ms if self.scrape_timeout_ms is not None else 0.8 * self.interval_ms
        )
        return ms / 1000.0

    @property
    def resolved_worker_id(self) -> str:
        """``--worker-id``, else ``host:port`` of the worker URL."""
        if self.worker_id:
            return self.worker_id
        parts = urlsplit(self.worker_url)
        return parts.netloc or self.worker_url
