"""Settings plumbing: CLI flags over ``SLAPLANE_*`` env vars over defaults.

Every process has a pydantic-settings class (prefix ``SLAPLANE_``) whose field
names are the CLI flag names with dashes. ``build_settings`` gives flags that were
actually passed precedence over the environment: pydantic-settings already ranks
init kwargs above env vars, so we only drop the flags left at ``None``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class CommonSettings(BaseSettings):
    """Settings every slaplane process shares."""

    model_config = SettingsConfigDict(env_prefix="SLAPLANE_", extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    """``redis://…`` for a shared store, ``memory://`` for the embedded single-process store."""
    cluster: str = "default"
    log_level: str = "INFO"
    log_json: bool = False


def build_settings(cls: type[S], **flags: Any) -> S:
    """Instantiate ``cls`` with explicit CLI flags (non-None) overriding env and defaults."""
    return cls(**{k: v for k, v in flags.items() if v is not None})
