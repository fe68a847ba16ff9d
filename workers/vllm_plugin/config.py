"""Plugin settings from ``SLAPLANE_*`` environment variables (parse → validate → frozen).

The plugin is constructed by vLLM, not by a slaplane ``__main__``, so its constructor
is the edge where the environment is read; this module only parses a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_TRUE = frozenset({"1", "true", "yes", "on"})
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENABLE_VAR = "SLAPLANE_PLUGIN_ENABLED"


class PluginConfigError(ValueError):
    """One or more settings are invalid; the message lists every problem."""


@dataclass(frozen=True, slots=True)
class PluginConfig:
    enabled: bool = False
    redis_url: str = DEFAULT_REDIS_URL
    cluster: str = "default"
    worker_id: str | None = None
    """``None``: derived from the host name and process id."""
    role: str | None = None
    """``None``: derived from vLLM's ``kv_transfer_config.kv_role``."""
    model: str | None = None
    """``None``: vLLM's served model name."""
    url: str = ""
    interval_s: float = 0.1
    """Minimum time between two published snapshots while the engine is busy."""
    heartbeat_s: float = 1.0
    """Publish at least this often while idle, so the worker stays visible."""
    window_s: float = 5.0
    """How far back TTFT/ITL quantiles reach when the last interval saw no observation
    (the agent's ``--window-s``; rates and quantiles are over the interval between two
    publishes otherwise, see ``workers.telemetry.derive``)."""
    publish_timeout_s: float = 1.0
    """Bound on one ``Store.publish_snapshot``."""


def _float(env: Mapping[str, str], name: str, default: float, errors: list[str]) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        errors.append(f"{name}={raw!r} is not a number")
        return default
    if value <= 0:
        errors.append(f"{name}={raw!r} must be > 0")
        return default
    return value


def config_from_env(env: Mapping[str, str]) -> PluginConfig:
    """Build the config from ``env``; raises ``PluginConfigError`` listing all problems."""
    errors: list[str] = []
    enabled = env.get(ENABLE_VAR, "").strip().lower() in _TRUE
    role = env.get("SLAPLANE_ROLE") or None
    if role is not None and role not in ("prefill", "decode", "both"):
        errors.append(f"SLAPLANE_ROLE={role!r} must be prefill, decode or both")
    interval_ms = _float(env, "SLAPLANE_PLUGIN_INTERVAL_MS", 100.0, errors)
    cfg = PluginConfig(
        enabled=enabled,
        redis_url=env.get("SLAPLANE_REDIS_URL") or DEFAULT_REDIS_URL,
        cluster=env.get("SLAPLANE_CLUSTER") or "default",
        worker_id=env.get("SLAPLANE_WORKER_ID") or None,
        role=role,
        model=env.get("SLAPLANE_MODEL") or None,
        url=env.get("SLAPLANE_WORKER_URL", ""),
        interval_s=interval_ms / 1000.0,
        heartbeat_s=_float(env, "SLAPLANE_PLUGIN_HEARTBEAT_S", 1.0, errors),
        window_s=_float(env, "SLAPLANE_PLUGIN_WINDOW_S", 5.0, errors),
    )
    if not cfg.redis_url.startswith(("redis://", "rediss://", "unix://")):
        errors.append(f"SLAPLANE_REDIS_URL={cfg.redis_url!r} must be a redis:// URL")
    if errors:
        raise PluginConfigError("; ".join(errors))
    return cfg


def role_from_kv_role(kv_role: str | None) -> str:
    """vLLM's ``kv_role`` → slaplane role (producer = prefill, consumer = decode)."""
    return {"kv_producer": "prefill", "kv_consumer": "decode"}.get(kv_role or "", "both")
