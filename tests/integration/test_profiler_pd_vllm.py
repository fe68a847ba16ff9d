"""``slaplane profile`` P/D mode against the real vLLM ExampleConnector pair: a tiny sweep
must finish, write a profile the sim loads, and find that admitting a request whose KV
comes from the prefill worker costs the decode engine's step something (the connector
loads the KV inside the forward pass). The full sweep and its numbers:
``benchmarks/validate_model.py --measure-pd`` and ``controlplane/profiles/README.md``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.profiles import load_profile
from tests.integration.conftest_vllm import VllmPair

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def test_pd_profile_on_real_vllm_pair(vllm_pd_pair: VllmPair, tmp_path: Path) -> None:
    out = tmp_path / "pd.csv"
    argv = [
        sys.executable, "-m", "controlplane.cli", "profile",
        "--prefill-url", vllm_pd_pair.prefill.url, "--decode-url", vllm_pd_pair.decode.url,
        "--base-profile", "cpu-tiny", "--out", str(out),
        "--json", str(tmp_path / "pd.json"),
        "--prompt-lengths", "700,1400", "--join-batches", "2", "--joins", "3", "--repeats", "2",
        "--decode-tokens", "192", "--pd-decode-points", "2x128", "--quiet",
    ]  # fmt: skip
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    prof = load_profile(out)
    doc = json.loads((tmp_path / "pd.json").read_text())
    assert len(doc["kv_save_rows"]) == 2 and len(doc["kv_load_rows"]) == 2
    # the load runs inside the decode engine's step: a joined step is longer than the
    # batch's own step (engine-side timestamps, so HTTP cannot fake it)
    assert all(ms > 0 for _, _, ms in doc["kv_load_rows"]), doc["kv_load_rows"]
    assert prof.has_pd_terms and prof.kv_load_ms(1000) > 0
    assert 0.2 < prof.decode_scale < 50
    # the base rows are carried unchanged
    base = load_profile("cpu-tiny")
    assert prof.prefill_ms(1024) == base.prefill_ms(1024)
