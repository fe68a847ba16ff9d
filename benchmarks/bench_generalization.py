"""Policy figures on traffic the tuning never saw (issue 14).

Each shared trace (Azure code, Mooncake synthetic) is cut at its median arrival: the
first half of its requests tunes, the second half reports. On the tuning half only:

1. the rate scale: the highest one at which round_robin with admission still meets the
   SLA for 90 % of requests (bisection, ``sweep_rate``): loaded, not hopeless. The two
   halves differ about twofold in load (Azure's first half is the busier, Mooncake's
   the lighter), so the held-out half is replayed at *its own* round_robin 90 % point:
   the same relative load. That condition is set by the baseline alone (nothing of
   ``sla`` or its tuning looks at the held-out half);
2. a one-at-a-time screen of the ``sla`` router's and admission's parameters there
   (``SCREEN``: which of them move attainment at all);
3. a seeded random search over the ones that do (``KNOBS``): for ``sla`` with admission
   (router + admission knobs), ``sla`` without admission (router knobs) and, so that
   tuning is not ``sla``'s privilege, round_robin's admission (admission knobs).

Then on the held-out half at its scale: every policy with admission on and off,
``sla`` at its defaults and tuned (attainment, goodput, goodput per GPU), the highest
rate scale each keeps >= 90 % at, and a request-by-request comparison of ``sla`` and
round_robin (``analyse``: who meets what, local prefill, TTFT prediction error, the
burst bound). Cluster: 2P+2D on the h100 profile, one SLA (TTFT 2 s, TPOT 50 ms), seed 0
(``slaplane replay``'s defaults).

    .venv/bin/python benchmarks/bench_generalization.py [--jobs 2] [--record]

``--record`` writes the ``policy_generalization`` results section (default: print only).

Reproduce one held-out row with the CLI (``--window`` = the split printed per trace):

    .venv/bin/slaplane replay --trace data/traces/AzureLLMInferenceTrace_code.csv \\
        --window SPLIT: --rate-scale TEST_SCALE --policies sla --router-params '{...}' \\
        --admission-params '{...}'
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.results_io import Headline, Result, Table, fmt, write_result  # noqa: E402
from controlplane.replay.accounting import OK, Outcome  # noqa: E402
from controlplane.replay.capacity import capacity_bound, uncached_tokens  # noqa: E402
from controlplane.replay.driver import ReplayDriver  # noqa: E402
from controlplane.replay.experiment import Options, build_experiment  # noqa: E402
from controlplane.replay.runner import Experiment, run_once, sweep_rate  # noqa: E402
from controlplane.replay.traces import read_trace, scale_rate  # noqa: E402

TRACES: dict[str, tuple[str, Path]] = {
    "azure": ("Azure code", ROOT / "data/traces/AzureLLMInferenceTrace_code.csv"),
    "mooncake": ("Mooncake", ROOT / "data/traces/synthetic_trace.jsonl"),
}
PREFILL, DECODE, PROFILE = 2, 2, "h100-llama3.1-8b"
TTFT_MS, ITL_MS = 2000.0, 50.0
TARGET = 0.9
"""Attainment that defines "loaded, not hopeless" and each policy's max rate scale."""
BASELINES = ("round_robin", "least_loaded", "kv_aware")
ROUTER_KEYS = ("local-prefill", "sla-ttft-scorer", "sla-itl-scorer", "sla-scorers")
"""Knob prefixes that are router params (the rest are ``AdmissionParams`` groups);
``sla-scorers`` sets both SLA scorers' field at once."""

Config = tuple[tuple[str, Any], ...]
"""Knob name -> value, only the ones that differ from the defaults (hashable)."""


@dataclass(frozen=True, slots=True)
class Knob:
    name: str
    """``<router param key or admission group>.<field>``."""
    default: float
    low: float
    high: float
    log: bool = False
    why: str = ""

    @property
    def router(self) -> bool:
        return self.name.split(".", 1)[0] in ROUTER_KEYS

    def sample(self, rng: random.Random) -> float:
        if self.log:
            lo, hi = self.low, self.high
            x = lo * (hi / lo) ** rng.random()
        else:
            x = self.low + (self.high - self.low) * rng.random()
        return float(f"{x:.3g}")


KNOBS: tuple[Knob, ...] = (
    Knob("local-prefill.risk_ratio", 0.25, 0.0, 1.0, why="when local prefill is looked at"),
    Knob("local-prefill.itl_margin", 0.8, 0.4, 1.0, why="TPOT guard of local prefill"),
    Knob("local-prefill.window_ms", 500.0, 100.0, 2000.0, log=True, why="duty-cycle memory"),
    Knob("local-prefill.spread_quantile", 0.25, 0.0, 0.5, why="burst-stall spread"),
    Knob("predictive.slack_ratio", 1.0, 0.7, 1.3, why="reject above target x this"),
    Knob("displace.min_size_ratio", 1.0, 1.0, 3.0, why="victim size floor"),
)
"""What the random search tunes: the knobs the screen found to move attainment."""

SCREEN: tuple[tuple[str, Any, tuple[Any, ...]], ...] = (
    *((k.name, k.default, (k.low, k.high)) for k in KNOBS),
    ("local-prefill.ttft_margin", 0.9, (0.6, 1.0)),
    ("local-prefill.min_gain", 0.1, (0.0, 0.5)),
    ("local-prefill.max_candidates", 4, (1, 2)),
    ("local-prefill.mode", "predictive", ("never",)),
    ("sla-scorers.miss_penalty", 1.0, (0.0, 4.0)),
    ("predictive.shed_hopeless", True, (False,)),
    ("displace.enabled", True, (False,)),
)
"""One-at-a-time screen: (knob, default, values tried)."""


def to_params(cfg: Config) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(router params, admission params) for ``ReplayConfig``."""
    router: dict[str, dict[str, Any]] = {}
    admission: dict[str, dict[str, Any]] = {}
    for name, value in cfg:
        key, fld = name.split(".", 1)
        if key == "sla-scorers":
            for k in ("sla-ttft-scorer", "sla-itl-scorer"):
                router.setdefault(k, {})[fld] = value
        elif key in ROUTER_KEYS:
            router.setdefault(key, {})[fld] = value
        else:
            admission.setdefault(key, {})[fld] = value
    return router, admission


def cfg_json(cfg: Config) -> str:
    r, a = to_params(cfg)
    return json.dumps({"router": r, "admission": a}, sort_keys=True)


# ---- runs (process-safe: every worker rebuilds its experiments from the paths) ----


@cache
def split_s(trace: str) -> float:
    """Arrival second of the median request: the first half of requests is before it."""
    tr = read_trace(TRACES[trace][1], "auto")
    return tr.requests[len(tr.requests) // 2].arrival_s


def window_of(trace: str, half: str) -> str:
    s = split_s(trace)
    return f"0:{s!r}" if half == "tune" else f"{s!r}:"  # repr round-trips the float


@cache
def experiment(trace: str, half: str, admission: bool) -> Experiment:
    opts = Options(
        TRACES[trace][1],
        window=window_of(trace, half),
        ttft_ms=TTFT_MS,
        itl_ms=ITL_MS,
        prefill=PREFILL,
        decode=DECODE,
        profile=PROFILE,
        admission=admission,
    )
    return build_experiment(opts)


def configured(exp: Experiment, cfg: Config) -> Experiment:
    rp, ap = to_params(cfg)
    return replace(exp, base=replace(exp.base, router_params=rp, admission_params=ap))


@dataclass(frozen=True, slots=True)
class Job:
    trace: str
    half: str
    admission: bool
    policy: str
    scale: float
    cfg: Config = ()


@dataclass(frozen=True, slots=True)
class Score:
    attainment: float
    goodput_rps: float
    goodput_per_gpu: float
    rejected: int
    offered: int


@dataclass(frozen=True, slots=True)
class Sweep:
    max_scale: float
    goodput_rps: float
    runs: int


def run_job(job: Job) -> Score:
    exp = configured(experiment(job.trace, job.half, job.admission), job.cfg)
    s, _ = run_once(exp, job.policy, job.scale)
    return Score(s.attainment, s.goodput_rps, s.goodput_per_gpu, s.rejected, s.offered)


def sweep_job(job: Job) -> Sweep:
    """Highest rate scale with >= TARGET attainment, bisection from ``job.scale``."""
    exp = configured(experiment(job.trace, job.half, job.admission), job.cfg)
    r = sweep_rate(exp, job.policy, target=TARGET, start=job.scale)
    return Sweep(r.max_rate_scale, r.goodput_rps, len(r.points))


T = TypeVar("T")
R = TypeVar("R")


class Runner:
    """Runs jobs inline or on ``jobs`` forked processes, each at most once."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.pool: ProcessPoolExecutor | None = None
        if jobs > 1:
            ctx = multiprocessing.get_context("fork")
            self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
        self.scores: dict[Job, Score] = {}
        self.runs = 0

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if self.pool is None:
            return [fn(x) for x in items]
        return list(self.pool.map(fn, items))

    def score(self, jobs: Iterable[Job]) -> list[Score]:
        jobs = list(jobs)
        todo = list(dict.fromkeys(j for j in jobs if j not in self.scores))
        for j, s in zip(todo, self.map(run_job, todo), strict=True):
            self.scores[j] = s
        self.runs += len(todo)
        return [self.scores[j] for j in jobs]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


# ---- the steps ----


def choose_scale(trace: str, half: str) -> float:
    """Highest scale at which round_robin with admission meets ``TARGET`` on ``half``."""
    start = 4.0 if trace == "azure" else 0.5
    return sweep_rate(
        experiment(trace, half, True), "round_robin", target=TARGET, start=start
    ).max_rate_scale


def screen(run: Runner, trace: str, scale: float) -> dict[str, float]:
    """Largest |attainment change| per screened knob vs ``sla`` defaults (tuning half)."""
    base = run.score([Job(trace, "tune", True, "sla", scale)])[0].attainment
    jobs = [
        Job(trace, "tune", True, "sla", scale, ((name, v),))
        for name, _, values in SCREEN
        for v in values
    ]
    scores = iter(run.score(jobs))
    out: dict[str, float] = {}
    for name, _, values in SCREEN:
        deltas = [next(scores).attainment - base for _ in values]
        out[name] = max(deltas, key=abs)
    return out


@dataclass(slots=True)
class Tuned:
    cfg: Config
    tune_attainment: float
    default_attainment: float
    tried: int


def search(
    run: Runner,
    trace: str,
    policy: str,
    scale: float,
    admission: bool,
    knobs: Sequence[Knob],
    samples: int,
    seed: int,
) -> Tuned:
    """Random search on the tuning half; the defaults are candidate 0 and win ties."""
    rng = random.Random(f"{seed}/{trace}/{policy}/{admission}")
    cands: list[Config] = [()]
    for _ in range(samples):
        cands.append(tuple((k.name, k.sample(rng)) for k in knobs))
    scores = run.score(Job(trace, "tune", admission, policy, scale, c) for c in cands)
    best = max(range(len(cands)), key=lambda i: (scores[i].attainment, -i))
    return Tuned(cands[best], scores[best].attainment, scores[0].attainment, len(cands))


# ---- request-by-request analysis of sla vs round_robin ----


@dataclass(slots=True)
class Traced:
    outcomes: list[Outcome]
    mode: dict[int, str] = field(default_factory=dict)
    """Admitted request index -> route mode (pd | local | unified)."""
    predicted_ms: dict[int, float] = field(default_factory=dict)


def traced_run(exp: Experiment, policy: str, scale: float) -> Traced:
    cfg = replace(exp.base, policy=policy)
    drv = ReplayDriver(cfg, scale_rate(exp.trace, scale), exp.tenants, exp.mix.slas)
    drv.decisions = []
    res = drv.run()
    out = Traced(res.outcomes)
    for d in drv.decisions:  # the last decision per request is the one carried out
        if d.admitted and d.route is not None:
            i = int(d.request_id)
            out.mode[i] = d.route.mode
            if d.route.predicted_ttft_ms is not None:
                out.predicted_ms[i] = d.route.predicted_ttft_ms
    return out


def miss_kind(o: Outcome) -> str:
    if o.met:
        return "met"
    if o.status != OK:
        return o.reason or o.status
    if o.ttft_s is None or o.ttft_s * 1000.0 > TTFT_MS:
        return "late_ttft"
    return "late_tpot"


def prediction_error(t: Traced) -> dict[str, float]:
    """Measured - predicted TTFT of served requests, and how often a request admitted
    as on time (predicted <= target) missed its TTFT anyway."""
    errs: list[float] = []
    ok_pred = ok_late = 0
    for o in t.outcomes:
        p = t.predicted_ms.get(o.index)
        if o.status != OK or o.ttft_s is None or p is None:
            continue
        ms = o.ttft_s * 1000.0
        errs.append(ms - p)
        if p <= TTFT_MS:
            ok_pred += 1
            ok_late += ms > TTFT_MS
    if not errs:
        return {"median_ms": 0.0, "p90_abs_ms": 0.0, "late_share": 0.0}
    abs_sorted = sorted(abs(e) for e in errs)
    return {
        "median_ms": statistics.median(errs),
        "p90_abs_ms": abs_sorted[int(0.9 * (len(abs_sorted) - 1))],
        "late_share": ok_late / ok_pred if ok_pred else 0.0,
    }


def miss_class(exp: Experiment) -> Callable[[Outcome], str]:
    """Why a request missed, from what no router can change to what it can:
    ``too_long`` (beyond the model or KV), ``infeasible`` (its prefill alone exceeds the
    TTFT target even with every earlier prefix cached), ``needs_cache`` (exceeds it
    without a prefix hit, fits with one the run did not have), ``tpot`` (served, too slow
    per token), ``queue`` (refused or late where an idle worker was fast enough)."""
    prof = exp.base.profile
    perfect = uncached_tokens(exp.trace.requests, exp.trace.block_tokens)

    def why(o: Outcome) -> str:
        k = miss_kind(o)
        if k == "exceeds_max_model_len":
            return "too_long"
        if prof.prefill_ms(perfect[o.index]) > TTFT_MS:
            return "infeasible"
        if prof.prefill_ms(o.prompt_tokens - o.cached_tokens) > TTFT_MS:
            return "needs_cache"
        return "tpot" if k == "late_tpot" else "queue"

    return why


def analyse(trace: str, scale: float, admission: bool) -> dict[str, Any]:
    """Where ``sla`` (defaults) and round_robin differ on the held-out half."""
    exp = experiment(trace, "test", admission)
    rr = traced_run(exp, "round_robin", scale)
    sla = traced_run(exp, "sla", scale)
    why = miss_class(exp)
    n = len(rr.outcomes)
    pair: Counter[str] = Counter()
    wins_local = 0
    rr_fate: Counter[str] = Counter()
    for a, b in zip(rr.outcomes, sla.outcomes, strict=True):
        key = {(True, True): "both", (False, True): "sla_only", (True, False): "rr_only"}
        pair[key.get((a.met, b.met), "neither")] += 1
        if b.met and not a.met:
            rr_fate[miss_kind(a)] += 1
            wins_local += sla.mode.get(b.index) == "local"
    admitted = len(sla.mode)
    local = sum(1 for m in sla.mode.values() if m == "local")
    return {
        "n": n,
        "pair": dict(pair),
        "sla_local_share": local / admitted if admitted else 0.0,
        "sla_wins_local_share": wins_local / pair["sla_only"] if pair["sla_only"] else 0.0,
        "rr_fate_of_sla_wins": dict(rr_fate),
        "misses": {
            "round_robin": dict(Counter(miss_kind(o) for o in rr.outcomes if not o.met)),
            "sla": dict(Counter(miss_kind(o) for o in sla.outcomes if not o.met)),
        },
        "miss_class": {
            "round_robin": dict(Counter(why(o) for o in rr.outcomes if not o.met)),
            "sla": dict(Counter(why(o) for o in sla.outcomes if not o.met)),
        },
        "prediction": {"round_robin": prediction_error(rr), "sla": prediction_error(sla)},
    }


def bounds(trace: str, scale: float) -> dict[str, float]:
    """Burst-aware bound on the held-out half at ``scale``: all 4 GPUs may prefill
    (what a local-prefill router may use) or only the 2 prefill GPUs (plain P/D), and
    the online reference (a router that knows exact sizes and queues, no future)."""
    exp = experiment(trace, "test", True)
    cap = exp.capacity
    assert cap is not None
    n = len(exp.trace.requests)
    slas = [exp.mix.slas[t] for t in exp.tenants]
    pd_only = capacity_bound(
        exp.trace.requests,
        slas,
        exp.base.profile,
        block_tokens=exp.trace.block_tokens,
        prefill=PREFILL,
        decode=DECODE,
        local_prefill=False,
    )
    return {
        "bound_local": cap.burst_met(scale) / n,
        "online_local": cap.online_met(scale) / n,
        "bound_pd": pd_only.burst_met(scale) / n,
        "online_pd": pd_only.online_met(scale) / n,
    }


# ---- report ----


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def rel(x: float, base: float) -> str:
    return f"{100 * (x / base - 1):+.1f} %" if base > 0 else "-"


@dataclass(slots=True)
class TraceReport:
    trace: str
    split: float
    tune_scale: float
    scale: float
    """Held-out half's rate scale."""
    tuned: dict[str, Tuned]
    rows: list[tuple[str, bool, Config, Score, Sweep | None, float]]
    """(label, admission, cfg, held-out score, held-out sweep, tuning-half attainment)."""
    screen: dict[str, float]
    analysis: dict[bool, dict[str, Any]]
    decomposition: dict[tuple[str, bool], Score]
    """(``round_robin_predictive`` | ``sla_never``, admission) -> held-out score: sla's local
    prefill rule given to round_robin, and sla without it."""
    bounds: dict[str, float]
    test_n: int
    tune_n: int


def run_trace(run: Runner, trace: str, args: argparse.Namespace) -> TraceReport:
    t0 = time.perf_counter()
    name = TRACES[trace][0]
    tune_scale, scale = args.scale.get(trace) or (
        choose_scale(trace, "tune"),
        choose_scale(trace, "test"),
    )
    took = time.perf_counter() - t0
    log(
        f"{name}: split at {split_s(trace):.3f} s, rate scale x{tune_scale:g} (tuning half) "
        f"x{scale:g} (held out) ({took:.0f} s)"
    )
    scr = screen(run, trace, tune_scale) if args.screen else {}
    if scr:
        log(
            "  screen (max attainment change): "
            + ", ".join(f"{k} {v:+.4f}" for k, v in scr.items())
        )
    router_knobs = [k for k in KNOBS if k.router]
    adm_knobs = [k for k in KNOBS if not k.router]
    tuned = {
        "sla": search(run, trace, "sla", tune_scale, True, KNOBS, args.samples, args.seed),
        "sla_noadm": search(
            run, trace, "sla", tune_scale, False, router_knobs, args.samples // 2, args.seed
        ),
        "rr": search(
            run, trace, "round_robin", tune_scale, True, adm_knobs, args.samples // 4, args.seed
        ),
    }
    for k, tu in tuned.items():
        log(f"  tuned {k}: {tu.default_attainment:.4f} -> {tu.tune_attainment:.4f} "
            f"({tu.tried} tried) {cfg_json(tu.cfg)}")  # fmt: skip
    spec: list[tuple[str, bool, str, Config]] = []
    for adm in (True, False):
        spec += [(p, adm, p, ()) for p in BASELINES]
        if adm:
            spec.append(("round_robin, tuned admission", adm, "round_robin", tuned["rr"].cfg))
        spec.append(("sla, defaults", adm, "sla", ()))
        spec.append(("sla, tuned", adm, "sla", tuned["sla" if adm else "sla_noadm"].cfg))
    test = run.score(Job(trace, "test", a, p, scale, c) for _, a, p, c in spec)
    tune = run.score(Job(trace, "tune", a, p, tune_scale, c) for _, a, p, c in spec)
    sweeps: list[Sweep | None] = [None] * len(spec)
    if args.sweep:
        got = run.map(sweep_job, [Job(trace, "test", a, p, scale, c) for _, a, p, c in spec])
        sweeps = list(got)
    rows = [
        (label, a, c, s, sw, tu.attainment)
        for (label, a, _, c), s, sw, tu in zip(spec, test, sweeps, tune, strict=True)
    ]
    decomp_jobs = {
        (f"{p}_{lp}", adm): Job(trace, "test", adm, p, scale, (("local-prefill.mode", lp),))
        for p, lp in (("round_robin", "predictive"), ("sla", "never"))
        for adm in (True, False)
    }
    dscores = run.score(decomp_jobs.values())
    rep = TraceReport(
        trace=trace,
        split=split_s(trace),
        tune_scale=tune_scale,
        scale=scale,
        tuned=tuned,
        rows=rows,
        screen=scr,
        analysis={adm: analyse(trace, scale, adm) for adm in (True, False)},
        decomposition=dict(zip(decomp_jobs, dscores, strict=True)),
        bounds=bounds(trace, scale),
        test_n=len(experiment(trace, "test", True).trace.requests),
        tune_n=len(experiment(trace, "tune", True).trace.requests),
    )
    log(f"{name} done in {time.perf_counter() - t0:.0f} s")
    return rep


def score_of(rep: TraceReport, label: str, adm: bool) -> Score:
    return next(s for lab, a, _, s, _, _ in rep.rows if lab == label and a == adm)


def trace_table(rep: TraceReport) -> Table:
    name = TRACES[rep.trace][0]
    rr = {adm: score_of(rep, "round_robin", adm) for adm in (True, False)}
    rr_sweep = {a: sw for lab, a, _, _, sw, _ in rep.rows if lab == "round_robin"}
    body = []
    for label, adm, _, s, sw, tune_att in rep.rows:
        base_sw = rr_sweep[adm]
        body.append(
            [
                label,
                "on" if adm else "off",
                pct(tune_att),
                pct(s.attainment),
                fmt(s.goodput_rps),
                fmt(s.goodput_per_gpu),
                rel(s.goodput_rps, rr[adm].goodput_rps),
                "-" if sw is None else f"x{sw.max_scale:.3g}",
                "-" if sw is None or base_sw is None else rel(sw.max_scale, base_sw.max_scale),
            ]
        )
    return Table(
        title=f"{name}: held-out second half ({rep.test_n:,} requests from "
        f"{rep.split:,.0f} s) at x{rep.scale:g}; tuned on the first ({rep.tune_n:,}) at "
        f"x{rep.tune_scale:g}",
        columns=[
            "policy",
            "admission",
            "attainment, tuning half",
            "attainment, held out",
            "goodput req/s",
            "req/s per GPU",
            "vs round_robin",
            "max scale >= 90 %",
            "max scale vs rr",
        ],
        rows=body,
        note="vs round_robin: goodput against round_robin with the same admission setting. "
        "Rate scales: where round_robin with admission meets 90 % on each half. Max "
        "scale: highest rate scale with >= 90 % attainment on the held-out half. "
        f"Held-out half in the CLI: slaplane replay --window {rep.split!r}: "
        f"--rate-scale {rep.scale:g}.",
    )


def summary_table(reps: Sequence[TraceReport]) -> Table:
    """The page's table (at most 6 rows): round_robin and sla per trace, held out."""
    body = []
    for rep in reps:
        sweeps = {(lab, a): sw for lab, a, _, _, sw, _ in rep.rows}
        rr = {a: score_of(rep, "round_robin", a) for a in (True, False)}
        for label in ("round_robin", "sla, defaults", "sla, tuned"):
            on, off = score_of(rep, label, True), score_of(rep, label, False)
            sw, base = sweeps[label, True], sweeps["round_robin", True]
            span = "-"
            if sw is not None and base is not None:
                span = f"x{sw.max_scale:.3g} ({rel(sw.max_scale, base.max_scale)})"
            body.append(
                [
                    f"{TRACES[rep.trace][0]}, x{rep.scale:.3g}",
                    label,
                    pct(on.attainment),
                    f"{fmt(on.goodput_rps)} ({rel(on.goodput_rps, rr[True].goodput_rps)})",
                    span,
                    pct(off.attainment),
                    f"{fmt(off.goodput_rps)} ({rel(off.goodput_rps, rr[False].goodput_rps)})",
                ]
            )
    return Table(
        title="Held-out second halves (tuned on the first): sla vs round_robin",
        columns=[
            "trace, rate scale",
            "policy",
            "attainment",
            "goodput req/s (vs rr)",
            "max scale >= 90 % (vs rr)",
            "attainment, no admission",
            "goodput, no admission (vs rr)",
        ],
        rows=body,
        note="2P+2D h100, TTFT 2 s / TPOT 50 ms. Rate scale: where round_robin with admission "
        "meets 90 % on the held-out half (the tuning half used its own). Per-trace tables "
        "with every policy and the tuned parameters follow in the JSON.",
    )


def params_table(reps: Sequence[TraceReport]) -> Table:
    defaults = {name: d for name, d, _ in SCREEN}
    tried = {name: vals for name, _, vals in SCREEN}
    tuned_names = {k.name for k in KNOBS}
    cols = ["parameter", "default", "screened"]
    for rep in reps:
        n = TRACES[rep.trace][0]
        cols += [f"{n}: max screen change", f"{n}: tuned (adm on / off)"]
    body = []
    for name in defaults:
        row: list[Any] = [name, defaults[name], " / ".join(map(str, tried[name]))]
        for rep in reps:
            d = rep.screen.get(name)
            row.append("-" if d is None else f"{100 * d:+.2f} pt")
            if name in tuned_names:
                on = dict(rep.tuned["sla"].cfg).get(name, "=")
                off = dict(rep.tuned["sla_noadm"].cfg).get(name, "-")
                row.append(f"{on} / {off}")
            else:
                row.append("not tuned")
        body.append(row)
    return Table(
        title="Parameters: screened one at a time with sla on the tuning half, then "
        "random search over the tuned ones",
        columns=cols,
        rows=body,
        note="Screen: largest attainment change (percentage points) against sla's defaults "
        "over the values tried. Tuned: the best of the defaults plus the random samples "
        "on the tuning half; '=' keeps the default, '-' not searched (an admission knob "
        "without admission). round_robin's admission was tuned the same way.",
    )


def per_trace(reps: Sequence[TraceReport], f: Callable[[TraceReport], str]) -> str:
    return "; ".join(f"{TRACES[r.trace][0]}: {f(r)}" for r in reps)


MISS_LABELS = {
    "queue": "refused or late in a queue",
    "tpot": "TPOT",
    "needs_cache": "prefill > TTFT without a prefix hit the run lacked",
    "infeasible": "prefill > TTFT even with every earlier prefix cached",
    "too_long": "beyond the model length",
}


def vs(a: float, b: float) -> str:
    return ">=" if a >= b else "<"


def notes(reps: Sequence[TraceReport]) -> list[str]:
    """The why, in four lines (each over every trace), from the numbers of this run."""

    def att(r: TraceReport, label: str, adm: bool) -> float:
        return score_of(r, label, adm).attainment

    def gp(r: TraceReport, label: str, adm: bool) -> float:
        return score_of(r, label, adm).goodput_rps

    def load(r: TraceReport) -> str:
        rows = {(lab, a): sw for lab, a, _, _, sw, _ in r.rows}
        rr_sw, sla_sw = rows["round_robin", True], rows["sla, defaults", True]
        if rr_sw is None or sla_sw is None or rr_sw.max_scale <= 0:
            return "not swept"
        return (
            f"90 % kept up to x{sla_sw.max_scale:.3g} vs x{rr_sw.max_scale:.3g} "
            f"({rel(sla_sw.max_scale, rr_sw.max_scale)})"
        )

    def admission(r: TraceReport) -> str:
        fate = Counter(r.analysis[True]["rr_fate_of_sla_wins"])
        refused = sum(v for k, v in fate.items() if k not in ("late_ttft", "late_tpot"))
        wins = sum(fate.values())
        return (
            f"{rel(gp(r, 'sla, defaults', False), gp(r, 'round_robin', False))} -> "
            f"{rel(gp(r, 'sla, defaults', True), gp(r, 'round_robin', True))} (admission "
            f"lifts rr {pct(att(r, 'round_robin', False))} -> "
            f"{pct(att(r, 'round_robin', True))}, sla {pct(att(r, 'sla, defaults', False))} -> "
            f"{pct(att(r, 'sla, defaults', True))}; of the {wins} requests only sla serves in "
            f"time, rr's admission refused {pct(refused / wins if wins else 0.0)})"
        )

    def local(r: TraceReport) -> str:
        d, on, b = r.decomposition, r.analysis[True], r.bounds
        sla, rr = att(r, "sla, defaults", True), att(r, "round_robin", True)
        rr_lp, sla_pd = (
            d["round_robin_predictive", True].attainment,
            d["sla_never", True].attainment,
        )
        return (
            f"sla {pct(sla)} with {pct(on['sla_local_share'])} of its requests prefilled on a "
            f"decode worker; rr + sla's local-prefill rule {pct(rr_lp)} ({vs(rr_lp, sla)} sla), "
            f"sla's scorer without the rule {pct(sla_pd)} ({vs(sla_pd, rr)} rr {pct(rr)}); "
            f"2 prefill GPUs alone: online reference {pct(b['online_pd'])}, bound "
            f"{pct(b['bound_pd'])}; all 4 GPUs: {pct(b['bound_local'])}"
        )

    def prediction(r: TraceReport) -> str:
        pr = r.analysis[True]["prediction"]["sla"]
        return (
            f"{pr['median_ms']:+.0f} ms median, {pr['p90_abs_ms']:.0f} ms p90 |error|, "
            f"{pct(pr['late_share'])} admitted as on time yet late"
        )

    def misses(r: TraceReport) -> str:
        mc = Counter(r.analysis[True]["miss_class"]["sla"])
        parts = [f"{MISS_LABELS[k]} {v}" for k, v in mc.most_common() if k in MISS_LABELS]
        return f"{sum(mc.values())} ({', '.join(parts)})"

    def tuning(r: TraceReport) -> str:
        tu, de = score_of(r, "sla, tuned", True), score_of(r, "sla, defaults", True)
        t = r.tuned["sla"]
        rr_t = score_of(r, "round_robin, tuned admission", True)
        rr = score_of(r, "round_robin", True)
        return (
            f"sla tuned {pct(t.default_attainment)} -> {pct(t.tune_attainment)} on the "
            f"tuning half, {pct(de.attainment)} -> {pct(tu.attainment)} held out; rr's "
            f"admission tuned {pct(rr.attainment)} -> {pct(rr_t.attainment)} held out"
        )

    return [
        "Why sla adds little at one load: admission rescues round_robin, and at the load "
        "where rr just meets 90 % no policy can add more than ~10 points (goodput sla vs rr, "
        "without -> with admission): "
        + per_trace(reps, admission)
        + ". The lead shows in load carried instead: "
        + per_trace(reps, load)
        + ".",
        "Where sla routes differently (admission on): " + per_trace(reps, local) + ".",
        "Tuned on the first half, carried to the second (attainment, admission on): "
        + per_trace(reps, tuning)
        + ".",
        "sla's TTFT prediction is not what errs (served requests, measured - predicted: "
        + per_trace(reps, prediction)
        + "); what it still misses: "
        + per_trace(reps, misses)
        + ".",
    ]


def headline(rep: TraceReport) -> Headline:
    name = TRACES[rep.trace][0]
    rr = score_of(rep, "round_robin", True)
    tu = score_of(rep, "sla, tuned", True)
    de = score_of(rep, "sla, defaults", True)
    return Headline(
        question=f"Does sla beat round_robin on traffic its tuning never saw ({name})?",
        metric="goodput req/s, held-out 2nd half",
        slaplane=f"sla tuned on 1st half {fmt(tu.goodput_rps)} "
        f"({rel(tu.goodput_rps, rr.goodput_rps)}); defaults {fmt(de.goodput_rps)} "
        f"({rel(de.goodput_rps, rr.goodput_rps)})",
        baseline=f"round_robin {fmt(rr.goodput_rps)} ({pct(rr.attainment)})",
        goal="> round robin",
        met=tu.goodput_rps > rr.goodput_rps,
        conditions=f"x{rep.scale:g} (round_robin's 90 % point there), 2P+2D h100, "
        f"TTFT 2 s / TPOT 50 ms, admission on for both",
    )


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_scales(raw: str) -> dict[str, tuple[float, float]]:
    """``azure=6.375/12,mooncake=0.6875/0.289`` -> {trace: (tuning, held-out scale)}."""
    out: dict[str, tuple[float, float]] = {}
    for part in filter(None, raw.split(",")):
        k, _, v = part.partition("=")
        a, _, b = v.partition("/")
        if k not in TRACES or not a or not b:
            raise SystemExit(f"--scale: expected trace=TUNE/TEST, trace in {sorted(TRACES)}")
        out[k] = (float(a), float(b))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--samples", type=int, default=40, help="random configs for sla")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument(
        "--scale", type=parse_scales, default={}, help="skip the scale sweeps: azure=6.375/12,..."
    )
    ap.add_argument("--no-screen", dest="screen", action="store_false")
    ap.add_argument("--no-sweep", dest="sweep", action="store_false")
    ap.add_argument(
        "--record", action="store_true", help="write benchmarks/results/policy_generalization.json"
    )
    ap.add_argument("--json", type=Path, default=None, help="also dump every number here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    run = Runner(args.jobs)
    try:
        reps = [run_trace(run, t, args) for t in args.traces.split(",") if t]
    finally:
        run.close()
    tables = [summary_table(reps), *(trace_table(r) for r in reps), params_table(reps)]
    for t in tables:
        print(f"\n{t.title}\n| " + " | ".join(t.columns) + " |")
        for row in t.rows:
            print("| " + " | ".join(map(str, row)) + " |")
    ns = notes(reps)
    print("\n" + "\n".join(f"- {n}" for n in ns))
    took = time.perf_counter() - t0
    log(f"{run.runs} scored runs (sweeps and analysis runs extra), {took:.0f} s")
    if args.json is not None:
        doc = {
            r.trace: {
                "split_s": r.split,
                "tune_scale": r.tune_scale,
                "scale": r.scale,
                "tuned": {k: {"params": cfg_json(v.cfg), "tune": v.tune_attainment,
                              "default": v.default_attainment, "tried": v.tried}
                          for k, v in r.tuned.items()},
                "screen": r.screen,
                "analysis": {("admission" if k else "no_admission"): v
                             for k, v in r.analysis.items()},
                "bounds": r.bounds,
                "decomposition": {f"{k}/{'adm' if a else 'noadm'}": v.attainment
                                  for (k, a), v in r.decomposition.items()},
                "rows": [{"label": lab, "admission": a, "params": cfg_json(c),
                          "attainment": s.attainment, "goodput_rps": s.goodput_rps,
                          "max_scale": None if sw is None else sw.max_scale, "tune": tu}
                         for lab, a, c, s, sw, tu in r.rows],
            }
            for r in reps
        }  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=1))
    if not args.record:
        return
    path = write_result(
        Result(
            section="policy_generalization",
            title="Routing policies on held-out traffic (tuned on each trace's first half)",
            question="Tuned on the first half of each trace, how do the policies do on the "
            "second half, and why does sla add little over round_robin there?",
            headline=[headline(r) for r in reps],
            tables=tables,
            notes=ns,
            order=30,
        )
    )
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
