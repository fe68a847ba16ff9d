"""benchmarks/bench_generalization.py and bench_replay.py: the search space is valid for
the policy core, the halves partition a trace, and a tiny end-to-end run writes one
results document of the shared format."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import bench_generalization as gen
from benchmarks import bench_replay as rep
from controlplane.policy.request.admission import AdmissionParams
from controlplane.policy.request.registry import RouterConfig, validate_router_config
from controlplane.replay.accounting import OK, REJECTED, Outcome


def _tiny_azure(path: Path, n: int = 80, seed: int = 3) -> Path:
    rng = random.Random(seed)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    t = 0.0
    for _ in range(n):
        t += rng.expovariate(1.0)
        whole, frac = int(t), t - int(t)
        mm, ss = divmod(whole, 60)
        stamp = f"2023-11-16 18:{mm:02d}:{ss:02d}.{int(frac * 1e7):07d}"
        lines.append(f"{stamp},{rng.randrange(200, 6000)},{rng.randrange(5, 80)}")
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    trace = _tiny_azure(tmp_path / "tiny.csv")
    monkeypatch.setattr(gen, "TRACES", {"tiny": ("Tiny", trace)})
    monkeypatch.setenv("SLAPLANE_RESULTS_DIR", str(tmp_path / "results"))
    gen.split_s.cache_clear()
    gen.experiment.cache_clear()
    yield trace
    gen.split_s.cache_clear()
    gen.experiment.cache_clear()


def test_every_knob_and_screen_value_is_a_valid_param() -> None:
    rng = random.Random(0)
    cfgs = [tuple((k.name, k.sample(rng)) for k in gen.KNOBS) for _ in range(20)]
    cfgs += [((name, v),) for name, _, values in gen.SCREEN for v in values]
    cfgs += [tuple((name, d) for name, d, _ in gen.SCREEN)]  # the defaults, spelled out
    for cfg in cfgs:
        router, admission = gen.to_params(cfg)
        validate_router_config(RouterConfig(policy="sla", params=router))
        AdmissionParams.model_validate(admission)
    # the listed defaults are the policy core's own
    router, admission = gen.to_params(tuple((name, d) for name, d, _ in gen.SCREEN))
    plain = validate_router_config(RouterConfig(policy="sla"))
    spelled = validate_router_config(RouterConfig(policy="sla", params=router))
    assert {k: v for k, v in plain.items() if k != "local-prefill"} == {
        k: v for k, v in spelled.items() if k != "local-prefill"
    }
    lp = plain["local-prefill"].model_dump() | {"mode": "predictive"}
    assert spelled["local-prefill"].model_dump() == lp
    assert AdmissionParams.model_validate(admission) == AdmissionParams()


def test_knob_samples_stay_in_range_and_repeat_with_the_seed() -> None:
    for k in gen.KNOBS:
        a = [k.sample(random.Random(7)) for _ in range(3)]
        assert a[0] == a[1] == a[2]
        xs = [k.sample(random.Random(i)) for i in range(200)]
        assert min(xs) >= k.low * 0.999 and max(xs) <= k.high * 1.001
        assert k.low <= k.default <= k.high


def test_to_params_splits_router_and_admission() -> None:
    r, a = gen.to_params(
        (
            ("local-prefill.risk_ratio", 0.5),
            ("sla-scorers.miss_penalty", 2.0),
            ("predictive.slack_ratio", 0.9),
        )
    )
    assert r == {
        "local-prefill": {"risk_ratio": 0.5},
        "sla-ttft-scorer": {"miss_penalty": 2.0},
        "sla-itl-scorer": {"miss_penalty": 2.0},
    }
    assert a == {"predictive": {"slack_ratio": 0.9}}


def test_halves_partition_the_trace(tiny: Path) -> None:
    tune = gen.experiment("tiny", "tune", True).trace.requests
    test = gen.experiment("tiny", "test", True).trace.requests
    assert len(tune) + len(test) == 80
    assert len(tune) == 40  # the median request opens the held-out half
    assert tune[0].arrival_s == 0.0 and test[0].arrival_s == 0.0  # both re-based


def test_miss_kind_and_prediction_error() -> None:
    def o(i: int, ttft: float | None, met: bool, status: str = OK) -> Outcome:
        out = Outcome(i, "default", 0.0, 100, 10, status=status, ttft_s=ttft, met=met)
        out.reason = "hopeless" if status == REJECTED else ""
        return out

    outs = [o(0, 0.5, True), o(1, 2.5, False), o(2, 1.0, False), o(3, None, False, REJECTED)]
    assert [gen.miss_kind(x) for x in outs] == ["met", "late_ttft", "late_tpot", "hopeless"]
    t = gen.Traced(outs, predicted_ms={0: 400.0, 1: 1900.0, 2: 1100.0})
    e = gen.prediction_error(t)
    assert e["median_ms"] == pytest.approx(100.0)  # errors +100, +600, -100
    assert e["late_share"] == pytest.approx(1 / 3)  # request 1: predicted on time, late


@pytest.mark.slow
def test_tiny_end_to_end_writes_one_section(tiny: Path, tmp_path: Path) -> None:
    gen.main(["--traces", "tiny", "--samples", "2", "--scale", "tiny=2/2", "--no-sweep",
              "--no-screen", "--record", "--json", str(tmp_path / "all.json")])  # fmt: skip
    doc = json.loads((tmp_path / "results" / "policy_generalization.json").read_text())
    assert doc["section"] == "policy_generalization" and doc["order"] == 30
    assert len(doc["headline"]) == 1 and doc["headline"][0]["goal"] == "> round robin"
    assert len(doc["tables"]) == 3  # the summary, one per trace, the parameters
    assert len(doc["tables"][0]["rows"]) <= 6  # the page shows the first table's 6 rows
    labels = [(r[0], r[1]) for r in doc["tables"][1]["rows"]]
    assert ("sla, tuned", "on") in labels and ("round_robin", "off") in labels
    assert 2 <= len(doc["notes"]) <= 4
    dump = json.loads((tmp_path / "all.json").read_text())["tiny"]
    pair = dump["analysis"]["admission"]["pair"]
    assert sum(pair.values()) == 40


def test_replay_headline_compares_the_best_policy_with_round_robin() -> None:
    pts = [
        rep.Point("Azure code", "round_robin", True, 8.0, 20.0, 5.0, 0.99, 7),
        rep.Point("Azure code", "sla", True, 12.0, 30.0, 7.5, 0.99, 7),
        rep.Point("Azure code", "round_robin", False, 3.0, 7.0, 1.75, 0.98, 7),
        rep.Point("Azure code", "sla", False, 6.0, 14.0, 3.5, 0.99, 7),
    ]
    (h,) = rep.headlines(pts)
    assert h.slaplane.startswith("sla 30") and "1.50x" in h.slaplane and h.met is True
    table = rep.goodput_table(
        pts + [rep.Point("Mooncake", p, a, 1.0, 1.0, 0.25, 0.9, 3) for p in ("round_robin", "sla")
               for a in (True, False)],
        ["round_robin", "sla"],
    )  # fmt: skip
    assert table.rows[1][6] == "1.50x" and table.rows[1][9] == "2.00x"
    summary = rep.summary_table(
        pts + [rep.Point("Mooncake", p, a, 1.0, 1.0, 0.25, 0.9, 3) for p in ("round_robin", "sla")
               for a in (True, False)],
        ["round_robin", "sla"],
    )  # fmt: skip
    assert len(summary.rows) == 4 and summary.rows[0][-1] == "sla 1.50x"
