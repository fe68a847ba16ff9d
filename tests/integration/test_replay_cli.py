"""``slaplane replay`` end to end on the shipped traces (a window, so it stays fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "data" / "traces"


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "replay", "--quiet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_replay_azure_sweep_json_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    plots = tmp_path / "plots"
    p = _replay(
        "--trace", str(TRACES / "AzureLLMInferenceTrace_code.csv"), "--window", "0:900",
        "--prefill", "1", "--decode", "1", "--policies", "round_robin,sla", "--sweep-rate",
        "--json", str(out), "--plot", str(plots),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert doc["capacity"]["capacity_rps"] > 0
    assert doc["cluster"]["shape"] == "1P+1D"
    for name in ("round_robin", "sla"):
        pol = doc["policies"][name]
        assert 0 <= pol["attainment"] <= 1
        assert pol["goodput_rps"] <= pol["offered_rps"] + 1e-9
        sweep = pol["sweep"]
        assert sweep["max_rate_scale"] > 0 and sweep["attainment"] >= 0.9
        assert len(sweep["points"]) >= 2
    for name in ("attainment_vs_rate", "ttft_cdf", "tpot_cdf", "tenant_attainment"):
        assert (plots / f"{name}.png").stat().st_size > 1000
    assert "goodput" in p.stdout


def test_replay_mooncake_tenants_unified(tmp_path: Path) -> None:
    out = tmp_path / "mc.json"
    p = _replay(
        "--trace", str(TRACES / "synthetic_trace.jsonl"), "--window", "0:120",
        "--workers", "2", "--tenants", str(ROOT / "data" / "tenants" / "three-tier.yaml"),
        "--policies", "kv_aware", "--json", str(out),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    pol = doc["policies"]["kv_aware"]
    assert {t["tenant"] for t in pol["tenants"]} == {"premium", "standard", "batch"}
    assert pol["cached_token_ratio"] > 0  # Mooncake prefixes hit the cache
    assert doc["trace"]["prefix_block_tokens"] == 512


def test_replay_rejects_bad_shape() -> None:
    p = _replay("--trace", str(TRACES / "synthetic_trace.jsonl"), "--prefill", "1")
    assert p.returncode != 0
