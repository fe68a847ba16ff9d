"""settings → vLLM / agent argv and env (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from controlplane.config import build_settings
from workers.launch.command import agent_launch, kv_transfer_config, nixl_check, vllm_launch
from workers.launch.settings import WorkerSettings


def _s(**kw: Any) -> WorkerSettings:
    base: dict[str, Any] = dict(model="/m/tiny", vllm_python="/v/bin/python", port=8100)
    base.update(kw)
    return build_settings(WorkerSettings, **base)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLAPLANE_VLLM_PYTHON", "SLAPLANE_ROLE", "SLAPLANE_MODEL", "SLAPLANE_PLUGIN"):
        monkeypatch.delenv(var, raising=False)


class TestVllmCommand:
    def test_prefill_example_connector(self) -> None:
        spec = vllm_launch(_s(role="prefill", cpu_core="0", kv_store_path="/kv"))
        a = spec.argv
        assert a[:3] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
        assert (_flag(a, "--model"), _flag(a, "--port"), _flag(a, "--dtype")) == (
            "/m/tiny",
            "8100",
            "float32",
        )
        assert _flag(a, "--max-model-len") == "4096"
        assert json.loads(_flag(a, "--kv-transfer-config")) == {
            "kv_connector": "ExampleConnector",
            "kv_role": "kv_producer",
            "kv_connector_extra_config": {"shared_storage_path": "/kv"},
        }
        assert spec.env["HF_HUB_OFFLINE"] == "1"
        assert spec.env["VLLM_CPU_OMP_THREADS_BIND"] == "0"
        assert spec.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
        assert spec.env["SLAPLANE_PLUGIN_ENABLED"] == "0"
        assert "SLAPLANE_WORKER_ID" not in spec.env

    @pytest.mark.parametrize(
        ("role", "kv_role"),
        [("prefill", "kv_producer"), ("decode", "kv_consumer"), ("both", "kv_both")],
    )
    def test_kv_role_from_role(self, role: str, kv_role: str) -> None:
        ktc = kv_transfer_config(_s(role=role))
        assert ktc is not None and ktc["kv_role"] == kv_role

    def test_kv_role_override_and_none(self) -> None:
        ktc = kv_transfer_config(_s(role="decode", kv_role="kv_both"))
        assert ktc is not None and ktc["kv_role"] == "kv_both"
        spec = vllm_launch(_s(kv_connector="none"))
        assert "--kv-transfer-config" not in spec.argv

    def test_nixl(self) -> None:
        s = _s(
            role="decode",
            kv_connector="nixl",
            nixl_side_channel_port=5601,
            nixl_pythonpath="/nixl",
        )
        spec = vllm_launch(s, base_pythonpath="/repo")
        assert json.loads(_flag(spec.argv, "--kv-transfer-config")) == {
            "kv_connector": "NixlConnector",
            "kv_role": "kv_consumer",
            "kv_buffer_device": "cpu",
        }
        assert spec.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "5601"
        assert spec.env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "127.0.0.1"
        assert spec.env["PYTHONPATH"] == "/nixl:/repo"

    def test_nixl_cpu_pair_as_run_live(self) -> None:
        """The exact pair tests/integration/test_vllm_nixl.py starts: vLLM's recommended
        producer/consumer roles, CPU KV buffer, one side channel each, chunked prefill
        left on, the nixl packages taken from the vLLM venv (no PYTHONPATH added)."""
        specs = {
            role: vllm_launch(
                _s(role=role, kv_connector="nixl", nixl_side_channel_port=port, cpu_core=core)
            )
            for role, port, core in (("prefill", 5600, "0"), ("decode", 5601, "1"))
        }
        for role, spec in specs.items():
            ktc = json.loads(_flag(spec.argv, "--kv-transfer-config"))
            assert ktc == {
                "kv_connector": "NixlConnector",
                "kv_role": {"prefill": "kv_producer", "decode": "kv_consumer"}[role],
                "kv_buffer_device": "cpu",
            }
            assert "--no-enable-chunked-prefill" not in spec.argv
            assert "PYTHONPATH" not in spec.env
            assert spec.env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "127.0.0.1"
        ports = {r: s.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] for r, s in specs.items()}
        assert ports == {"prefill": "5600", "decode": "5601"}
        cores = {r: s.env["VLLM_CPU_OMP_THREADS_BIND"] for r, s in specs.items()}
        assert cores == {"prefill": "0", "decode": "1"}

    @pytest.mark.parametrize(
        ("host", "given", "want"),
        [
            ("10.0.0.5", None, "10.0.0.5"),
            ("0.0.0.0", None, "127.0.0.1"),
            ("0.0.0.0", "p1.internal", "p1.internal"),
        ],
    )
    def test_nixl_side_channel_host(self, host: str, given: str | None, want: str) -> None:
        s = _s(kv_connector="nixl", nixl_side_channel_port=5600, host=host,
               nixl_side_channel_host=given)  # fmt: skip
        assert vllm_launch(s).env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == want

    def test_no_nixl_env_for_other_connectors(self) -> None:
        env = vllm_launch(_s(role="prefill")).env
        assert not any(k.startswith("VLLM_NIXL") for k in env)
        assert nixl_check(_s(role="prefill")) is None

    def test_nixl_check_command(self) -> None:
        s = _s(kv_connector="nixl", nixl_side_channel_port=5600, nixl_pythonpath="/nixl")
        check = nixl_check(s, base_pythonpath="/repo")
        assert check is not None
        assert check.argv[:2] == ["/v/bin/python", "-c"]
        assert check.env == {"PYTHONPATH": "/nixl:/repo"}

    def test_plugin_env(self) -> None:
        s = _s(
            role="decode",
            plugin=True,
            worker_id="d1",
            cluster="k",
            redis_url="redis://r:6379/3",
            served_model_name="tiny",
        )
        env = vllm_launch(s).env
        assert env["SLAPLANE_PLUGIN_ENABLED"] == "1"
        assert env["SLAPLANE_WORKER_ID"] == "d1-plugin"  # the agent owns "d1"
        assert (env["SLAPLANE_ROLE"], env["SLAPLANE_CLUSTER"]) == ("decode", "k")
        assert env["SLAPLANE_REDIS_URL"] == "redis://r:6379/3"
        assert env["SLAPLANE_WORKER_URL"] == "http://127.0.0.1:8100"
        assert env["SLAPLANE_MODEL"] == "tiny"
        assert _flag(vllm_launch(s).argv, "--served-model-name") == "tiny"
        assert vllm_launch(_s(plugin=True, agent=False)).env["SLAPLANE_WORKER_ID"] == (
            "127.0.0.1:8100"
        )

    def test_extra_args_last(self) -> None:
        assert vllm_launch(_s(vllm_args=("--seed", "1"))).argv[-2:] == ["--seed", "1"]


class TestAgentCommand:
    def test_flags(self) -> None:
        s = _s(role="prefill", host="0.0.0.0", cluster="k", redis_url="redis://r/1")
        a = agent_launch(s, python="/cp/python").argv
        assert a[:4] == ["/cp/python", "-m", "controlplane.cli", "agent"]
        assert _flag(a, "--worker-url") == "http://127.0.0.1:8100"
        assert _flag(a, "--worker-id") == "127.0.0.1:8100"
        assert (_flag(a, "--role"), _flag(a, "--cluster")) == ("prefill", "k")
        assert (_flag(a, "--redis-url"), _flag(a, "--interval-ms")) == ("redis://r/1", "250")
        assert _flag(a, "--metrics-port") == "0"
        assert "--model" not in a


class TestSettings:
    def test_env_is_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SLAPLANE_VLLM_PYTHON", "/env/python")
        monkeypatch.setenv("SLAPLANE_ROLE", "decode")
        s = build_settings(WorkerSettings, model="/m", role=None)
        assert (s.vllm_python, s.role.value) == ("/env/python", "decode")

    def test_flag_beats_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SLAPLANE_VLLM_PYTHON", "/env/python")
        assert _s().vllm_python == "/v/bin/python"

    def test_all_errors_reported(self) -> None:
        with pytest.raises(ValidationError) as ei:
            build_settings(
                WorkerSettings, model="", plugin=True, redis_url="memory://", kv_connector="nixl"
            )
        msg = str(ei.value)
        assert "--model" in msg and "--redis-url" in msg and "side-channel" in msg


class TestExampleConnectorGuard:
    def test_example_connector_prefills_whole_prompts(self) -> None:
        a = vllm_launch(_s(role="decode", max_model_len=4096)).argv
        assert "--no-enable-chunked-prefill" in a
        assert _flag(a, "--max-num-batched-tokens") == "4096"

    def test_operator_choice_wins(self) -> None:
        a = vllm_launch(_s(role="decode", vllm_args=("--enable-chunked-prefill",))).argv
        assert "--no-enable-chunked-prefill" not in a and "--max-num-batched-tokens" not in a

    def test_nixl_keeps_chunked_prefill(self) -> None:
        a = vllm_launch(_s(role="prefill", kv_connector="nixl", nixl_side_channel_port=5600)).argv
        assert "--no-enable-chunked-prefill" not in a
