"""Gateway settings: CLI flags over ``SLAPLANE_*`` env vars over these defaults."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from controlplane.config import CommonSettings


def parse_worker_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | str:
    """A CIDR network (or a bare address) or ``host:port`` (``[v6]:port``); ValueError else."""
    entry = entry.strip()
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    u = urlsplit("//" + entry)
    if not u.hostname or u.port is None or u.path or u.query or u.fragment or u.username:
        raise ValueError(f"worker network {entry!r}: expected a CIDR or host:port")
    return f"[{u.hostname}]:{u.port}" if ":" in u.hostname else f"{u.hostname}:{u.port}"


class GatewaySettings(CommonSettings):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    policy: str = "sla"
    policy_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-plugin params (``registry.RouterConfig.params``), e.g. from a JSON flag."""
    admission: bool = True
    """False: admit every routable request (rate limits still apply); a no-control baseline
    that replay's ``--no-admission`` models the same way."""
    admission_params: dict[str, Any] = Field(default_factory=dict)
    hold_poll_s: float = Field(default=0.05, gt=0)
    """Held requests recheck admission this often even when nothing woke them."""
    profile: str = ""
    """Latency profile for the predictor: a sim profile name (``cpu-tiny``) or CSV path."""
    trust_tenant_header: bool = False
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    """Addresses (or CIDR networks) whose X-Tenant-ID is believed when trust_tenant_header
    is on; from anyone else the header is ignored and the API key decides."""
    auth_failures_burst: int = Field(default=20, ge=1)
    auth_failures_per_min: float = Field(default=20.0, gt=0)
    """Failed authentications a client address may make (burst, then per minute) before
    it gets 429 without a lookup."""
    worker_networks: list[str] = Field(default_factory=list)
    """Where workers may be reached: CIDR networks (for worker URLs with an IP address)
    and/or ``host:port`` entries. Empty: anywhere (workers usually sit on private
    networks). A snapshot whose URL is outside is skipped: never routed to, counted
    (``slaplane_gateway_worker_snapshots_rejected_total``), logged once per worker.
    Static workers (``--prefill-url`` …) are configured here and always allowed."""
    worker_ttl_s: float = Field(default=60.0, gt=0)
    """A worker whose last heartbeat is older is dropped from routing and pruned from the
    store's worker hash and heartbeat set (by the gateway's periodic resync)."""
    require_key: bool = True
    """When false, requests without a key are served as the ``default`` tenant."""
    prefill_url: list[str] = Field(default_factory=list)
    decode_url: list[str] = Field(default_factory=list)
    worker_url: list[str] = Field(default_factory=list)
    model: str = ""
    """Model name of static workers when they cannot be asked (else from their /v1/models)."""
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_attempts: int = Field(default=3, ge=1, le=10)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    first_byte_timeout_s: float = Field(default=60.0, gt=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    stale_after_s: float = Field(default=2.0, gt=0)
    resync_s: float = Field(default=2.0, gt=0)
    store_timeout_s: float = Field(default=0.25, gt=0)
    store_backoff_max_s: float = Field(default=2.0, gt=0)
    tenant_cache_s: float = Field(default=10.0, ge=0)
    record_flush_s: float = Field(default=0.25, gt=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown_s: float = Field(default=2.0, gt=0)
    event_loop: str = Field(default="auto", pattern="^(auto|uvloop|asyncio)$")
    """``auto`` runs on uvloop when it is installed (lower added latency per hop)."""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for p in v:
            ipaddress.ip_network(p, strict=False)  # ValueError: a clear config error
        return v

    @field_validator("worker_networks")
    @classmethod
    def _worker_networks(cls, v: list[str]) -> list[str]:
        for p in v:
            parse_worker_network(p)  # ValueError: a clear config error
        return v

    @field_validator(
        "prefill_url",
        "decode_url",
        "worker_url",
        "trusted_proxies",
        "worker_networks",
        mode="before",
    )
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [u.strip() for u in v.split(",") if u.strip()]
        return v
