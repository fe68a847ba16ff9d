"""``slaplane agent`` command: --once --from-file --json on every fixture, --help, settings."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from workers.agent.cli import main
from workers.agent.settings import AgentSettings

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared/fixtures/vllm-0.32.0"
FLAGS = (
    "--worker-url",
    "--worker-id",
    "--role",
    "--model",
    "--cluster",
    "--redis-url",
    "--interval-ms",
    "--metrics-port",
    "--once",
    "--from-file",
    "--json",
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The command configures the root logger (as it should in a process); undo it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(main)
    return app


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("metrics-*.txt")), ids=lambda p: p.name)
def test_once_from_file_json(path: Path) -> None:
    res = CliRunner().invoke(
        _app(),
        ["--once", "--from-file", str(path), "--json", "--role", "decode", "--cluster", "c9"],
    )
    assert res.exit_code == 0, res.output
    snap = json.loads(res.stdout.strip().splitlines()[-1])
    assert snap["up"] is True and snap["worker"] == path.stem
    assert snap["cluster"] == "c9" and snap["role"] == "decode" and snap["model"] == "tiny-llama"
    assert snap["kv_capacity_tokens"] == 131072


def test_once_from_file_after_values() -> None:
    res = CliRunner().invoke(
        _app(), ["--once", "--json", "--from-file", str(FIXTURES / "metrics-loaded.txt")]
    )
    snap = json.loads(res.stdout.strip().splitlines()[-1])
    assert (snap["running"], snap["waiting"]) == (3, 5)


def test_help_explains_every_flag() -> None:
    res = CliRunner().invoke(_app(), ["--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert res.exit_code == 0
    for flag in FLAGS:
        assert flag in res.output, flag


def test_bad_role_is_rejected() -> None:
    res = CliRunner().invoke(
        _app(), ["--once", "--from-file", str(FIXTURES / "metrics-idle.txt"), "--role", "chef"]
    )
    assert res.exit_code == 2


def test_flags_override_env_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.config import build_settings

    monkeypatch.setenv("SLAPLANE_INTERVAL_MS", "100")
    monkeypatch.setenv("SLAPLANE_WORKER_URL", "http://10.0.0.5:8100")
    s = build_settings(AgentSettings, interval_ms=None, worker_url=None, cluster="east")
    assert s.interval_ms == 100 and s.cluster == "east"
    assert s.resolved_worker_id == "10.0.0.5:8100"
    assert s.timeout_s == pytest.approx(0.08)
    s = build_settings(AgentSettings, interval_ms=250)
    assert s.interval_ms == 250 and s.timeout_s < s.interval_s


def test_timeout_must_be_below_interval() -> None:
    with pytest.raises(ValueError):
        AgentSettings(interval_ms=100, scrape_timeout_ms=150)


def test_once_against_dead_worker_reports_down_and_exit_1() -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    res = CliRunner().invoke(
        _app(), ["--once", "--json", "--worker-url", url, "--redis-url", "memory://"]
    )
    assert res.exit_code == 1
    snap = json.loads(res.stdout.strip().splitlines()[-1])
    assert snap["up"] is False and snap["url"] == url


def test_unsupported_store_url_exits_2() -> None:
    res = CliRunner().invoke(_app(), ["--once", "--redis-url", "postgres://x"])
    assert res.exit_code == 2
