from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.replay.traces import (
    MOONCAKE_BLOCK_TOKENS,
    detect_format,
    parse_window,
    read_trace,
    scale_rate,
    window,
)

DATA = Path(__file__).resolve().parents[3] / "data" / "traces"


def _azure(tmp_path: Path) -> Path:
    p = tmp_path / "az.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:04.5000000,100,10\n"
        "2023-11-16 18:17:03.9799600,4808,7\n"
        "2023-11-16 18:17:06.0000000,20,3"
    )
    return p


def test_azure_sorted_and_rebased(tmp_path: Path) -> None:
    t = read_trace(_azure(tmp_path))
    assert [r.prompt_tokens for r in t.requests] == [4808, 100, 20]
    assert t.requests[0].arrival_s == 0.0
    assert t.requests[1].arrival_s == pytest.approx(0.52004, abs=1e-9)
    assert t.duration_s == pytest.approx(2.02004, abs=1e-9)
    assert t.block_tokens == 0 and t.requests[0].hash_ids == ()
    assert [r.index for r in t.requests] == [0, 1, 2]


def test_mooncake_hash_ids_and_ms(tmp_path: Path) -> None:
    p = tmp_path / "mc.jsonl"
    rows = [
        {"timestamp": 1500, "input_length": 600, "output_length": 4, "hash_ids": [0, 1]},
        {"timestamp": 500, "input_length": 10, "output_length": 0, "hash_ids": [7]},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert detect_format(p) == "mooncake"
    t = read_trace(p)
    assert t.block_tokens == MOONCAKE_BLOCK_TOKENS
    assert [r.hash_ids for r in t.requests] == [(7,), (0, 1)]
    assert t.requests[1].arrival_s == pytest.approx(1.0)
    assert t.requests[0].output_tokens == 1  # clamped: every request yields a token


def test_window_and_scale(tmp_path: Path) -> None:
    t = read_trace(_azure(tmp_path))
    w = window(t, 0.5, 3.0)
    assert [r.prompt_tokens for r in w.requests] == [100, 20]
    assert w.requests[0].arrival_s == 0.0
    s = scale_rate(t, 2.0)
    assert s.duration_s == pytest.approx(t.duration_s / 2)
    assert s.mean_rate_rps == pytest.approx(2 * t.mean_rate_rps)
    with pytest.raises(ValueError):
        window(t, 100.0, 200.0)
    with pytest.raises(ValueError):
        scale_rate(t, 0)


def test_parse_window() -> None:
    assert parse_window(None) == (0.0, None)
    assert parse_window("600:1200") == (600.0, 1200.0)
    assert parse_window("600:") == (600.0, None)
    assert parse_window("900") == (0.0, 900.0)


def test_unknown_format(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError):
        read_trace(p)


def test_shipped_traces_match_readme() -> None:
    az = read_trace(DATA / "AzureLLMInferenceTrace_code.csv")
    assert len(az.requests) == 8819
    assert az.duration_s == pytest.approx(3435.9, abs=0.1)
    assert az.mean_rate_rps == pytest.approx(2.567, abs=0.001)
    mc = read_trace(DATA / "synthetic_trace.jsonl")
    assert len(mc.requests) == 3993
    assert mc.duration_s == pytest.approx(1022.025)
    assert all(len(r.hash_ids) == -(-r.prompt_tokens // 512) for r in mc.requests)
