"""Session fixture: one real vLLM prefill/decode pair (ExampleConnector, one core each),
each started by ``slaplane worker`` with its agent and the stat-logger plugin, all
publishing to one real Redis. Started once (~60 s; later starts reuse vLLM's torch
compile cache) and shared by every test that asks for ``vllm_pd_pair``.
``launch_vllm_pair`` starts the same kind of pair for one module (e.g. the NixlConnector
pair of ``test_vllm_nixl.py``).

Cleanup is layered: SIGTERM to each launcher (which stops its vLLM and agent groups),
SIGKILL after a grace period, and finally every process still carrying this session's
marker environment variable is killed, so nothing outlives the test session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from controlplane.gateway.cluster import ClusterState
from controlplane.schemas import Priority, TenantSLA
from controlplane.state import Store
from tests.conftest import free_port

T = TypeVar("T")

MODEL_NAME = "tiny-llama"
MARKER_VAR = "SLAPLANE_TEST_VLLM_SESSION"
STARTUP_TIMEOUT_S = 300.0


@dataclass
class VllmWorker:
    role: str
    worker_id: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    nixl_side_channel_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def plugin_worker_id(self) -> str:
        return f"{self.worker_id}-plugin"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class VllmPair:
    prefill: VllmWorker
    decode: VllmWorker
    cluster: str
    redis_url: str
    model: str = MODEL_NAME
    kv_store: Path = field(default_factory=Path)

    @property
    def workers(self) -> tuple[VllmWorker, VllmWorker]:
        return self.prefill, self.decode


def _http_json(url: str, body: dict[str, Any] | None = None, timeout_s: float = 60.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def pd_completion(pair: VllmPair, prompt: list[int], max_tokens: int = 8) -> dict[str, Any]:
    """One request through the P/D flow of the fixtures README: prefill with
    ``max_tokens=1`` and ``do_remote_decode``, then a streamed decode with the returned
    ``kv_transfer_params``. Returns the prefill response, the decode chunks and timings."""
    t0 = time.monotonic()
    pre = _http_json(
        f"{pair.prefill.url}/v1/completions",
        {
            "model": pair.model,
            "prompt": prompt,
            "max_tokens": 1,
            "stream": False,
            "kv_transfer_params": {"do_remote_decode": True},
        },
    )
    body = {
        "model": pair.model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream_options": {"include_usage": True},
        "kv_transfer_params": pre.get("kv_transfer_params"),
    }
    req = urllib.request.Request(
        f"{pair.decode.url}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    chunks: list[dict[str, Any]] = []
    ttft_s: float | None = None
    with urllib.request.urlopen(req, timeout=60) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if ttft_s is None and chunk.get("choices"):
                ttft_s = time.monotonic() - t0
            chunks.append(chunk)
    return {"prefill": pre, "chunks": chunks, "ttft_s": ttft_s, "e2e_s": time.monotonic() - t0}


def metric_value(page: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(page):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def scrape(worker: VllmWorker) -> str:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def settled(read: Callable[[], T], ok: Callable[[T], bool], timeout_s: float = 10.0) -> T:
    """Poll ``read`` until ``ok`` or ``timeout_s``; the last value either way, so the
    caller's assertion shows it. vLLM's /metrics can trail a response the client already
    holds: the API server records a batch's stats after handing its outputs out, and on
    a loaded host that is a scrape later."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


async def add_premium_key(store: Store, prefix: str) -> tuple[str, str]:
    """A fresh premium tenant with lax targets and its API key: (tenant, key)."""
    tenant = f"{prefix}-{uuid.uuid4().hex[:8]}"
    key = f"sk-{uuid.uuid4().hex}"
    await store.put_tenant(
        TenantSLA(tenant=tenant, priority=Priority.PREMIUM, ttft_ms=20_000, itl_ms=5_000)
    )
    await store.put_api_key(hashlib.sha256(key.encode()).hexdigest(), tenant)
    return tenant, key


async def wait_for_pair_pools(state: ClusterState, pair: VllmPair) -> None:
    """Until the gateway has discovered the pair from telemetry; agent + plugin publish
    for each worker, and that must still be one prefill and one decode worker."""
    for _ in range(150):  # the follower's first resync (startup) normally suffices
        if len(state.pools) >= 2:
            break
        await asyncio.sleep(0.2)
    assert state.pools == {
        (pair.model, "prefill"): [pair.prefill.worker_id],
        (pair.model, "decode"): [pair.decode.worker_id],
    }, state.pools


def side_channel_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free, else a free port below the kernel's ephemeral range.

    Fixed: vLLM 0.32 hashes ``VLLM_NIXL_SIDE_CHANNEL_PORT`` into its torch.compile cache key
    (``envs.compile_factors``), so a new port per run would mean a new cache entry (moot
    while its AOT cache fails to load with torch 2.13, see workers/launch/README.md).
    Below the ephemeral range: a NIXL worker binds its side channel
    only after model load and warm-up, and an ephemeral port picked at launch
    (``free_port``) can by then be held by an outgoing connection, vLLM's own ZMQ sockets
    included (seen: ``ZMQError: Address already in use`` in ``_nixl_handshake_listener``;
    the decode server then never gets healthy)."""
    if preferred is not None:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
            except OSError:
                pass
            else:
                return preferred
    try:
        lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, min(lo, 30000)))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _launcher_argv(
    w: VllmWorker,
    core: str,
    kv: Path,
    cluster: str,
    redis_url: str,
    connector: str = "example",
    plugin: bool = True,
) -> list[str]:
    if connector == "nixl":
        assert w.nixl_side_channel_port is not None
        kv_args = ["--nixl-side-channel-port", str(w.nixl_side_channel_port)]
    else:
        kv_args = ["--kv-store-path", str(kv)]
    return [
        sys.executable,
        "-m",
        "controlplane.cli",
        "worker",
        "--role",
        w.role,
        "--model",
        os.environ["SLAPLANE_TINY_MODEL"],
        "--served-model-name",
        MODEL_NAME,
        "--port",
        str(w.port),
        "--worker-id",
        w.worker_id,
        "--cpu-core",
        core,
        "--kv-connector",
        connector,
        *kv_args,
        "--cluster",
        cluster,
        "--redis-url",
        redis_url,
        "--agent-interval-ms",
        "100",
        "--plugin" if plugin else "--no-plugin",
        "--health-timeout-s",
        str(STARTUP_TIMEOUT_S),
    ]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _kill_marked(marker: str) -> None:
    """Last resort: SIGKILL every process whose environment carries this session's marker."""
    needle = f"{MARKER_VAR}={marker}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(d.name), signal.SIGKILL)


def _stop(w: VllmWorker, grace_s: float = 40.0) -> None:
    p = w.proc
    if p is None or p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def _wait_published(pair: VllmPair, deadline: float, plugin: bool = True) -> None:
    """Ready means every worker's agent (and plugin) snapshots are in Redis."""
    import redis

    from controlplane.state import keys

    r = redis.Redis.from_url(pair.redis_url, decode_responses=True)
    try:
        want = {w.worker_id for w in pair.workers}
        if plugin:
            want |= {w.plugin_worker_id for w in pair.workers}
        limit = max(deadline, time.monotonic()) + 30
        while True:
            missing = {w for w in want if not r.exists(keys.worker_hash(pair.cluster, w))}
            if not missing:
                return
            if time.monotonic() > limit:
                tails = "\n".join(f"--- {w.role}\n{w.log_tail()}" for w in pair.workers)
                pytest.fail(f"no snapshots from {sorted(missing)}\n{tails}")
            time.sleep(0.2)
    finally:
        r.close()


@pytest.fixture(scope="session")
def vllm_redis_url(request: pytest.FixtureRequest) -> str:
    """Session-wide Redis URL (db 0, which the per-test ``redis_url`` fixture never
    flushes); keys are isolated by a unique cluster name."""
    base = os.environ.get("SLAPLANE_REDIS_URL")
    if base is None:
        base = request.getfixturevalue("redis_server").url
    base = base.rstrip("/")
    if base.count("/") > 2:
        base = base.rsplit("/", 1)[0]
    return f"{base}/0"


@contextlib.contextmanager
def launch_vllm_pair(
    tmp: Path, redis_url: str, connector: str = "example", plugin: bool = True
) -> Iterator[VllmPair]:
    """Start a prefill (core 0) / decode (core 1) pair with ``slaplane worker`` (agents,
    and the plugin when ``plugin``), wait until both are healthy and published, and stop
    everything they started on exit. Skips without the vLLM venv or the tiny model."""
    exe = os.environ.get("SLAPLANE_VLLM_PYTHON")
    model = os.environ.get("SLAPLANE_TINY_MODEL")
    if not exe or not Path(exe).exists() or not model or not Path(model).is_dir():
        pytest.skip("SLAPLANE_VLLM_PYTHON / SLAPLANE_TINY_MODEL missing (make vllm-env)")
    kv = tmp / "kvstore"
    marker = uuid.uuid4().hex
    cluster = f"vllmtest-{marker[:8]}"
    nixl = connector == "nixl"
    pair = VllmPair(
        prefill=VllmWorker(
            "prefill", "vllm-prefill", free_port(), tmp / "prefill.log",
            nixl_side_channel_port=side_channel_port(25600) if nixl else None,
        ),
        decode=VllmWorker(
            "decode", "vllm-decode", free_port(), tmp / "decode.log",
            nixl_side_channel_port=side_channel_port(25601) if nixl else None,
        ),
        cluster=cluster,
        redis_url=redis_url,
        kv_store=kv,
    )  # fmt: skip
    env = {**os.environ, MARKER_VAR: marker, "SLAPLANE_VLLM_PYTHON": exe}
    env.pop("SLAPLANE_PLUGIN_ENABLED", None)
    try:
        for w, core in ((pair.prefill, "0"), (pair.decode, "1")):
            argv = _launcher_argv(w, core, kv, cluster, redis_url, connector, plugin)
            with w.log_path.open("ab") as log:
                w.proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        pending = list(pair.workers)
        while pending:
            for w in list(pending):
                if w.proc is not None and w.proc.poll() is not None:
                    pytest.fail(f"{w.role} launcher exited early:\n{w.log_tail()}")
                if _healthy(w.url):
                    pending.remove(w)
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {w.role}\n{w.log_tail()}" for w in pending)
                pytest.fail(f"vLLM not healthy after {STARTUP_TIMEOUT_S:.0f}s\n{tails}")
            time.sleep(0.5)
        _wait_published(pair, deadline, plugin)
        yield pair
    finally:
        for w in pair.workers:
            _stop(w)
        _kill_marked(marker)


@pytest.fixture(scope="session")
def vllm_pd_pair(
    vllm_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmPair]:
    """A running ExampleConnector prefill (core 0) / decode (core 1) pair with agents and
    plugins."""
    with launch_vllm_pair(tmp_path_factory.mktemp("vllm-pd"), vllm_redis_url) as pair:
        yield pair
