"""Shared fixtures: a real Redis for every test that needs one.

``SLAPLANE_REDIS_URL`` points at an existing server (CI machines run one on
6379); otherwise a private ``redis-server`` is started in a temp dir on a free
port. Each test gets its own logical database number flushed before use, so
tests never see each other's keys.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from controlplane.procs import free_port

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


class RedisServer:
    """A private redis-server process that tests may also stop and restart (fault tests)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server not installed (make test installs it)")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--databases",
                "64",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for this test session (also used by restart tests)."""
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


_db_counter = iter(range(1, 10_000))


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a flushed Redis database: the shared server from SLAPLANE_REDIS_URL when
    set, else the session's private server."""
    import redis as redis_sync

    base = os.environ.get("SLAPLANE_REDIS_URL")
    if base is None:
        base = request.getfixturevalue("redis_server").url
    base = base.rstrip("/")
    if base.count("/") > 2:  # strip an explicit db number
        base = base.rsplit("/", 1)[0]
    db = 1 + next(_db_counter) % 15
    url = f"{base}/{db}"
    client = redis_sync.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    """Every store test runs against both implementations."""
    from controlplane.state import open_store

    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    s = open_store(url)
    yield s
    await s.close()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} missing: tests expect the shared folder beside the project")
    return SHARED


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With SLAPLANE_FAIL_ON_SKIP=1 (``make test``, hence CI) a skipped test fails the run:
    a tier that silently stopped running is a failing tier. Exit code 5 (no tests
    collected) already fails on its own."""
    if os.environ.get("SLAPLANE_FAIL_ON_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and session.exitstatus == 0:
        for rep in skipped:
            print(f"\nunexpected skip: {rep.nodeid}: {rep.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
