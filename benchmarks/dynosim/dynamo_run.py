"""Run NVIDIA Dynamo's DynoSim (``python -m dynamo.replay``, ai-dynamo 1.4.2) from its venv.

One function, ``run``: a Mooncake-format trace on ``prefill``+``decode`` disaggregated
workers or ``workers`` aggregated ones, round robin or Dynamo's KV router, optionally
with Dynamo's planner (throughput target, same GPU budget). The engine args carry the
slaplane profile's limits (KV blocks, block size, ``max_num_seqs``, chunk budget,
``max_model_len``) and the NPZ step table ``make_npz.py`` writes from it.

The venv: ``~/.cache/slaplane/dynamo-venv`` (``SLAPLANE_DYNAMO_PY`` overrides the
interpreter), made with ``pip install ai-dynamo==1.4.2 ai-dynamo-runtime==1.4.2
scikit-learn filterpy pmdarima prophet plotly prometheus_api_client``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.profiles import load_profile

DYN_PY = Path(
    os.environ.get(
        "SLAPLANE_DYNAMO_PY", str(Path.home() / ".cache/slaplane/dynamo-venv/bin/python")
    )
)
VERSION = "1.4.2"


@dataclass(frozen=True, slots=True)
class DynRun:
    report: dict[str, Any]
    rows: list[dict[str, Any]] | None
    """One dict per request (``--report-jsonl``); None with the planner (unsupported)."""
    wall_s: float


def engine_args(npz: Path, profile: str, role: str) -> str:
    p = load_profile(profile)
    return json.dumps(
        {
            "worker_type": role,
            "planner_profile_data": str(npz),
            "num_gpu_blocks": p.kv_capacity_tokens // p.block_size,
            "block_size": p.block_size,
            "max_num_seqs": p.max_num_seqs,
            "max_num_batched_tokens": p.max_num_batched_tokens,
            "max_model_len": p.max_model_len,
        }
    )


def run(
    trace: Path,
    npz: Path,
    profile: str,
    work: Path,
    *,
    prefill: int = 0,
    decode: int = 0,
    workers: int = 0,
    router: str = "round_robin",
    scale: float = 1.0,
    ttft_ms: float = 2000.0,
    itl_ms: float = 50.0,
    planner: bool = False,
    tag: str = "run",
) -> DynRun:
    """One DynoSim run (``prefill``/``decode`` > 0: P/D; else ``workers`` aggregated)."""
    report = work / f"dyn-{tag}.json"
    rows = work / f"dyn-{tag}.jsonl"
    report.unlink(missing_ok=True)
    rows.unlink(missing_ok=True)
    disagg = prefill > 0
    cmd = [str(DYN_PY), "-m", "dynamo.replay", str(trace), "--trace-format", "mooncake"]
    if disagg:
        cmd += [
            "--num-prefill-workers", str(prefill), "--num-decode-workers", str(decode),
            "--prefill-engine-args", engine_args(npz, profile, "prefill"),
            "--decode-engine-args", engine_args(npz, profile, "decode"),
        ]  # fmt: skip
    else:
        cmd += [
            "--num-workers", str(workers),
            "--extra-engine-args", engine_args(npz, profile, "aggregated"),
        ]  # fmt: skip
    cmd += [
        "--arrival-speedup-ratio", str(scale), "--sla-ttft-ms", str(ttft_ms),
        "--sla-itl-ms", str(itl_ms), "--report-json", str(report), "--router-mode", router,
    ]  # fmt: skip
    if planner:
        cfg = {
            "mode": "disagg" if disagg else "agg", "backend": "mocker",
            "optimization_target": "throughput", "max_gpu_budget": prefill + decode + workers,
            "min_endpoint": 1, "ttft_ms": ttft_ms, "itl_ms": itl_ms,
            "throughput_adjustment_interval_seconds": 10,
        }  # fmt: skip
        cmd += ["--planner-config", json.dumps(cfg)]
    else:
        cmd += ["--report-jsonl", str(rows)]
    t0 = time.perf_counter()
    env = {**os.environ, "RUST_LOG": "error"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not report.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"dynamo.replay {tag} failed: {' | '.join(tail)}")
    per_req = (
        [json.loads(line) for line in rows.read_text().splitlines() if line.strip()]
        if rows.exists()
        else None
    )
    return DynRun(json.loads(report.read_text()), per_req, wall)
