"""The plugin inside the real vLLM venv: loaded by vLLM's own loader, fed real stats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from controlplane.schemas import WorkerSnapshot
from tests.conftest import free_port

pytestmark = pytest.mark.vllm

CHILD = Path(__file__).with_name("vllm_child.py")
REPO = Path(__file__).resolve().parents[3]


def _vllm_python() -> str:
    exe = os.environ.get("SLAPLANE_VLLM_PYTHON")
    if not exe or not Path(exe).exists():
        pytest.skip("SLAPLANE_VLLM_PYTHON not set (make vllm-env)")
    return exe


def test_plugin_in_real_vllm(redis_url: str) -> None:
    exe = _vllm_python()
    cluster = f"plug-{uuid.uuid4().hex[:8]}"
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLAPLANE_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [exe, str(CHILD), redis_url, cluster, dead_url],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=REPO,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))

    # vLLM's loader accepts the entry point and it is a StatLoggerBase subclass
    assert "workers.vllm_plugin.stat_logger:SlaplaneStatLogger" in out["factories"]
    assert out["is_stat_logger"] is True
    assert out["disabled_publisher"] is False

    # the published snapshot has the store's layout and the fed numbers
    snap = WorkerSnapshot.from_redis(out["hash"])
    assert snap.source == "plugin"
    assert (snap.cluster, snap.worker, snap.role) == (cluster, "plug-1", "prefill")
    assert (snap.running, snap.waiting, snap.kv_usage) == (3, 3, 0.25)
    assert snap.prompt_tokens_total == 200 * 300
    assert snap.generation_tokens_total == 200 * 4
    assert snap.requests_finished_total == 200
    assert snap.kv_capacity_tokens == 1024 * 128
    assert snap.prefix_hit_rate == pytest.approx(0.5)
    assert snap.ttft_p50_ms is not None and 10.0 <= snap.ttft_p50_ms <= 250.0
    # the agent's arithmetic over vLLM's own buckets: 2-4 ms gaps all lie in (0, 10 ms]
    assert snap.itl_p50_ms == pytest.approx(5.0)
    assert snap.extra["waiting_deferred"] == 1.0
    assert snap.extra["prompt_tokens_external_total"] == 200 * 100
    assert snap.extra["prompt_tokens_computed_total"] == 200 * 72
    assert "plug-1" in out["zset"] and out["stream_len"] >= 1
    assert out["publish_errors_total"] == 0
    # rate-limited: 200 steps in well under a second → a handful of publishes
    assert 1 <= out["published_total"] <= 10
    # closing publishes a final snapshot marked down
    assert out["after_close_up"] == "0"

    # robustness: garbage is counted, not raised; a dead Redis is written to off the
    # engine's thread (test_publisher's hung-store test), so record() is never slowed by it;
    # its cost is printed here, not asserted (a loaded host is slow, not wrong)
    assert out["record_errors_total"] == 1
    assert out["dead_errors_total"] >= 1
    assert out["dead_identity"] == ["plug-dead-e1", "decode"]
    print(
        f"record(): {out['record_us']:.1f} us/step live, {out['dead_record_us']:.1f} dead",
        file=sys.stderr,
    )
