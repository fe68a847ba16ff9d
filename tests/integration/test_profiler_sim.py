"""``slaplane profile`` against a live sim worker: the measured profile must recover
the worker's own latency model (cpu-tiny), resume from its checkpoint, and be
readable by the sim (``parse_profile``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from controlplane.profiler.output import write_profile
from controlplane.profiler.plan import Checkpoint, make_plan
from controlplane.profiler.recommend import recommend
from controlplane.profiler.run import run_plan
from controlplane.profiles import load_profile
from workers.sim.testing import running_sim

TINY = load_profile("cpu-tiny")


async def test_profile_recovers_sim_model(tmp_path: Path) -> None:
    plan = make_plan([256, 1024, 2048], [1, 4], [128, 1024], 4096)
    ckpt = Checkpoint(tmp_path / "p.points.jsonl")
    async with running_sim(profile="cpu-tiny") as sim:
        model = await run_plan(
            sim.url, None, plan, ckpt, repeats=3, decode_tokens=24, timeout_s=60,
            console=Console(quiet=True), quiet=True,
        )  # fmt: skip
    assert model
    assert len(ckpt.results) == len(plan)
    off = []
    for (phase, batch, tokens), r in ckpt.results.items():
        want = TINY.prefill_ms(tokens) if phase == "prefill" else TINY.decode_ms(batch, tokens)
        # The sim never runs faster than its model, whatever the host does.
        assert r.latency_ms >= 0.8 * want - 3.0, (phase, batch, tokens, r.latency_ms, want)
        # HTTP + event-loop overhead on a shared 2-core box; a host stall can still hit
        # every repeat of one point (seen in CI: one prefill point at 3.6x), so one
        # point of the plan may be off, not more.
        if r.latency_ms != pytest.approx(want, rel=0.25, abs=3.0):
            off.append((phase, batch, tokens, round(r.latency_ms, 1), round(want, 1)))
    assert len(off) <= 1, off
    prof = write_profile(
        tmp_path / "measured.csv", ckpt.results.values(), {"name": "m", "max_model_len": 4096}
    )
    assert prof.prefill_ms(1024) == pytest.approx(TINY.prefill_ms(1024), rel=0.35)
    assert load_profile(tmp_path / "measured.csv").decode_batches == [1.0, 4.0]

    # Resumable: a second run with the same checkpoint measures nothing new.
    lines = (tmp_path / "p.points.jsonl").read_text().count("\n")
    again = Checkpoint(tmp_path / "p.points.jsonl")
    assert all(again.done(p) for p in plan)
    async with running_sim(profile="cpu-tiny") as sim:
        await run_plan(
            sim.url, model, plan, again, repeats=2, decode_tokens=24, timeout_s=60,
            console=Console(quiet=True), quiet=True,
        )  # fmt: skip
    assert (tmp_path / "p.points.jsonl").read_text().count("\n") == lines

    rec = recommend(prof, ttft_ms=500, itl_ms=10, prompt_tokens=1024, output_tokens=64, rate_rps=5)
    assert rec.feasible
    assert 1 <= rec.decode_batch_limit <= 8 or rec.decode_step_ms <= 10
    assert rec.max_prompt_tokens_in_ttft >= 2048
    assert json.dumps(rec.to_json())


def test_profile_cli_against_sim_worker_process(tmp_path: Path) -> None:
    """The command end to end: a real ``slaplane sim-worker`` process on a free port."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    cli = [sys.executable, "-m", "controlplane.cli"]
    worker = subprocess.Popen(
        [*cli, "sim-worker", "--host", "127.0.0.1", "--port", str(port), "--profile", "cpu-tiny"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        out = tmp_path / "tiny.csv"
        p = subprocess.run(
            [*cli, "profile", "--url", url, "--out", str(out), "--prompt-lengths", "256,1024",
             "--batches", "1,2", "--contexts", "128", "--repeats", "1", "--decode-tokens", "16",
             "--plot", str(tmp_path / "tiny.png"), "--json", str(tmp_path / "rec.json"), "--quiet"],
            cwd=root, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        prof = load_profile(out)
        assert prof.prefill_tokens == [256.0, 1024.0]
        assert prof.prefill_ms(1024) == pytest.approx(TINY.prefill_ms(1024), rel=0.25)
        assert (tmp_path / "tiny.png").stat().st_size > 1000
        assert "prefill" in p.stdout and "decode" in p.stdout
        assert json.loads((tmp_path / "rec.json").read_text())["decode_batch_limit"] >= 1
    finally:
        worker.terminate()
        worker.wait(timeout=10)
