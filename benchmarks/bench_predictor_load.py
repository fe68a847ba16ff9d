"""Compare the planner's load predictors on real arrival traces (shared/traces/).

Arrivals are binned into planner intervals; each predictor forecasts every bin's
request rate and mean prompt length one step ahead (what the planner does), and we
report MAE, MAPE and bias (forecast - actual: positive = over-provisioning).

    .venv/bin/python benchmarks/bench_predictor_load.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from controlplane.policy.planner.load_predictors import (
    LOAD_PREDICTORS,
    LoadPredictorParams,
    make_load_predictor,
)
from controlplane.policy.planner.load_predictors.evaluate import score_one_step
from controlplane.replay.traces import read_trace

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"


def bins(path: Path, interval_s: float) -> tuple[list[float], list[float]]:
    trace = read_trace(path)
    t0 = trace.requests[0].arrival_s
    n = max(1, int(trace.duration_s // interval_s))  # whole bins only: a partial last bin
    count = [0] * n
    tokens = [0] * n
    for r in trace.requests:
        i = int((r.arrival_s - t0) // interval_s)
        if i >= n:  # would under-count its rate
            break
        count[i] += 1
        tokens[i] += r.prompt_tokens
    rate = [c / interval_s for c in count]
    isl = [t / c if c else 0.0 for t, c in zip(tokens, count, strict=True)]
    return rate, isl


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--intervals", default="10,60")
    ap.add_argument("--season-length", type=int, default=0)
    args = ap.parse_args()
    params = LoadPredictorParams(season_length=args.season_length)
    print("| trace | interval s | series | predictor | MAE | MAPE % | bias |")
    print("|---|---|---|---|---|---|---|")
    for name in ("AzureLLMInferenceTrace_code.csv", "synthetic_trace.jsonl"):
        for interval in (float(x) for x in args.intervals.split(",")):
            rate, isl = bins(TRACES / name, interval)
            for series_name, series in (("rate rps", rate), ("prompt tokens", isl)):
                for pred in sorted(LOAD_PREDICTORS):
                    s = score_one_step(make_load_predictor(pred, params), series)
                    print(f"| {name.split('.')[0]} | {interval:.0f} | {series_name} | {pred} | "
                          f"{s.mae:.3g} | {s.mape_pct:.1f} | {s.bias:+.3g} |")  # fmt: skip


if __name__ == "__main__":
    main()
