"""Worker-launch settings: CLI flags over ``SLAPLANE_*`` env vars over these defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from controlplane.config import CommonSettings
from controlplane.schemas import Role

DEFAULT_VLLM_PYTHON = str(Path("~/.cache/slaplane/vllm-venv/bin/python").expanduser())


class WorkerSettings(CommonSettings):
    """Everything ``slaplane worker`` needs; env names are ``SLAPLANE_<FIELD>``."""

    role: Role = Role.BOTH
    model: str = ""
    """Model directory (or HF id with a warm cache; HF_HUB_OFFLINE=1 is set)."""
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    worker_id: str | None = None
    """Default ``host:port``, the same id the agent derives from its --worker-url."""
    vllm_python: str = DEFAULT_VLLM_PYTHON
    dtype: str = "float32"
    max_model_len: int = Field(default=4096, ge=16)
    cpu_core: str = "auto"
    """``VLLM_CPU_OMP_THREADS_BIND``: ``auto``, a core (``0``) or a list (``0-1``, ``0|1``)."""
    kvcache_space_gib: int = Field(default=1, ge=1)
    kv_connector: Literal["example", "nixl", "none"] = "example"
    kv_role: Literal["kv_producer", "kv_consumer", "kv_both"] | None = None
    """Default from the role: prefill → kv_producer, decode → kv_consumer, both → kv_both."""
    kv_store_path: str = "/tmp/slaplane-kvstore"
    """ExampleConnector's shared directory; prefill and decode must use the same one."""
    nixl_side_channel_port: int | None = Field(default=None, ge=1, le=65535)
    """``VLLM_NIXL_SIDE_CHANNEL_PORT``: the NIXL handshake listener; unique per host."""
    nixl_side_channel_host: str | None = None
    """``VLLM_NIXL_SIDE_CHANNEL_HOST``: where the handshake listener binds and the address a
    prefill worker hands to decode workers in ``kv_transfer_params.remote_host``. Default:
    ``--host`` (``127.0.0.1`` for a wildcard host; set it to a routable address when prefill
    and decode run on different hosts)."""
    nixl_pythonpath: str | None = None
    """Folder with the ``nixl``/``nixl-cu12`` packages (pip --target), put on PYTHONPATH.
    Not needed when they are installed in the vLLM venv (``make vllm-env`` does that)."""
    vllm_args: tuple[str, ...] = ()
    """Extra arguments appended to the vLLM command line as they are."""
    health_timeout_s: float = Field(default=600.0, gt=0)
    shutdown_grace_s: float = Field(default=20.0, gt=0)
    agent: bool = True
    agent_interval_ms: int = Field(default=250, ge=20)
    agent_metrics_port: int = Field(default=0, ge=0, le=65535)
    plugin: bool = False
    plugin_worker_id: str | None = None
    """Default ``<worker_id>-plugin`` while the agent also publishes (they would overwrite
    each other's hash), else ``worker_id``."""
    plugin_interval_ms: int = Field(default=100, ge=10)

    @model_validator(mode="after")
    def _check(self) -> WorkerSettings:
        errors = []
        if not self.model:
            errors.append("--model is required")
        if self.plugin and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            errors.append("--plugin publishes to Redis: --redis-url must be redis://")
        if self.kv_connector == "nixl" and self.nixl_side_channel_port is None:
            errors.append("--kv-connector nixl needs --nixl-side-channel-port (unique per host)")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def resolved_worker_id(self) -> str:
        return self.worker_id or self.url.removeprefix("http://")

    @property
    def resolved_plugin_worker_id(self) -> str:
        if self.plugin_worker_id:
            return self.plugin_worker_id
        wid = self.resolved_worker_id
        return f"{wid}-plugin" if self.agent else wid

    @property
    def resolved_nixl_side_channel_host(self) -> str:
        if self.nixl_side_channel_host:
            return self.nixl_side_channel_host
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def resolved_kv_role(self) -> str:
        if self.kv_role is not None:
            return self.kv_role
        return {Role.PREFILL: "kv_producer", Role.DECODE: "kv_consumer"}.get(self.role, "kv_both")
