"""The results-page sections of the gateway, routing, telemetry and sim-engine benchmarks:
each headline's goal is judged from the measured figures (never typed in), and a recorded
section renders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import (
    bench_gateway,
    bench_local_prefill_routing,
    bench_routing,
    bench_sim_engine,
    bench_telemetry_freshness,
    make_results,
    results_io,
)

LOAD = (1.0, 2.0, 3.0)


def test_routing_headline_is_the_worst_churn_per_goal() -> None:
    m = bench_routing
    fast, slow = [10.0] * 100, [10.0] * 90 + [150.0] * 10
    runs = {
        0: {"sla|8": fast, "sla|64": fast, "sla|1000": fast, "round_robin|64": fast},
        20: {"sla|8": fast, "sla|64": slow, "sla|1000": [900.0] * 100},
    }
    r = m.result(runs, 100, LOAD, LOAD)
    at64, at1000 = r.headline
    assert (at64.slaplane, at64.met) == ("150 µs", False)
    assert "(at 20)" in at64.conditions
    assert (at1000.slaplane, at1000.met) == ("900 µs", True)
    rr = next(row for row in r.tables[0].rows if row[0] == "round_robin" and row[1] == 20)
    assert rr[2:] == ["-", "-", "-"]  # not measured at that churn


def test_telemetry_judges_the_worst_250_ms_run() -> None:
    m = bench_telemetry_freshness

    def run(interval: int, p99: float | None) -> dict[str, Any]:
        return {"interval_ms": interval, "workers": 8, "flips": 10, "matched": 10,
                "p50_ms": 50.0, "p90_ms": 80.0, "p99_ms": p99, "max_ms": p99,
                "failed_scrapes_ratio": 0.0, "cpu_ms_per_scrape": 2.0,
                "agent_cpu_cores_total": 0.1, "loadavg_1m": (1.0, 1.0)}  # fmt: skip

    micro = {"parse_changed_ms": 0.8, "parse_unchanged_ms": 0.1, "derive_ms": 0.02}
    ok = m.result([run(100, 900.0), run(250, 240.0)], micro, LOAD, LOAD, 15.0)
    assert ok.headline[0].met is True  # the 100 ms run is not the goal's interval
    bad = m.result([run(250, 240.0), run(250, 320.0)], micro, LOAD, LOAD, 15.0)
    assert (bad.headline[0].met, bad.headline[0].slaplane) == (False, "320 ms (p50 50 ms)")
    assert m.result([run(100, 90.0)], micro, LOAD, LOAD, 15.0).headline == []


def test_sim_engine_goal_only_judged_on_the_full_workload() -> None:
    m = bench_sim_engine
    r = {"profile": "p", "trace": "synthetic Poisson trace", "kv_tokens": None,
         "requests": 9000, "workers": 8, "simulated_s": 3600.0, "wall_s": 1.5, "cpu_s": 1.4,
         "engine_steps": 10, "steps_per_s": 7.0, "finished": 9000, "rejected": 0,
         "ttft_p50_s": 0.1, "ttft_p99_s": 0.5, "prefix_hit_ratio": 0.3,
         "preemptions": 0}  # fmt: skip
    assert m.result(r, LOAD, LOAD).headline[0].met is True
    assert m.result({**r, "wall_s": 61.0}, LOAD, LOAD).headline[0].met is False
    assert m.result({**r, "requests": 900}, LOAD, LOAD).headline[0].met is None
    assert m.result({**r, "kv_tokens": 1000}, LOAD, LOAD).headline[0].met is None


def test_gateway_latency_met_against_vllm_router() -> None:
    m = bench_gateway
    args = argparse.Namespace(redis=False, gateway_cpu=None, time_scale="1", max_tokens=16)
    direct = ([0.010] * 10, [0.002] * 10)

    def samples(gw_ms: float, vr_ms: float | None) -> Any:
        res = {"direct": direct, "gateway": ([0.010 + gw_ms / 1000] * 10, [0.002] * 10)}
        if vr_ms is not None:
            res["vllm-router"] = ([0.010 + vr_ms / 1000] * 10, [0.002] * 10)
        return res

    def head(gw_ms: float, vr_ms: float | None) -> Any:
        runs = [(50, samples(0.0, 0.0)), (1, samples(gw_ms, vr_ms))]
        return m.latency_result(runs, args, "", LOAD, LOAD).headline[0]

    h = head(1.0, 0.5)
    assert (h.met, h.slaplane, h.baseline) == (False, "+1.00 ms", "+0.50 ms (vllm-router)")
    assert h.metric.endswith(", 1 stream")  # the fewest streams
    assert head(0.4, 0.5).met is True
    assert (head(0.4, None).met, head(0.4, None).baseline) == (None, m.NO_BASELINE)


def test_recorded_sections_render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLAPLANE_RESULTS_DIR", str(tmp_path))
    lp = bench_local_prefill_routing
    rows = [(64, 300.0, [60.0] * 10, [50.0] * 10, 3), (8, 2000.0, [40.0] * 10, [40.0] * 10, 0)]
    path = results_io.write_result(lp.result(rows, 10, LOAD, LOAD))
    doc = json.loads(path.read_text())
    assert doc["section"] == "local_prefill_routing"
    assert doc["headline"][0]["slaplane"].startswith("60 / 60 µs")
    mr = make_results
    page = mr.render(mr.load(tmp_path))
    assert "Cost of the local-prefill rule in routing" in page
    assert "1.00 / 2.00 / 3.00" in page  # the load average note
