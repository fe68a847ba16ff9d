"""Tenant-level breach prediction: is ``slaplane_predicted_sla_breach_probability`` right?

``bench_predictor_accuracy.py`` scores the per-request TTFT prediction. This scores
what the controller exports and acts on: per tenant, the probability that the
tenant's objective (e.g. 99 % of requests meet the SLA) is broken over the next
horizon (``BreachParams.horizon_s``, 30 s). The label is what then happened: among the
tenant's requests that *arrived* in (tick, tick + horizon], the met fraction fell
below the objective. A window where the tenant sent nothing is left out (nothing to
breach, nothing to predict).

Non-overlapping windows: the controller ticks every 5 s, but one tick per horizon is
scored (the first tick after the warm-up, then the first tick at least one horizon
after the previous one), so every request is in at most one labelled window per
tenant and windows are not counted six times over. Cells are (trace, rate scale,
tenant): pooling tenants (or scales) mostly measures that their base rates differ, so
the pooled figure is reported only as a secondary, labelled row. Each cell gives its
breached / not-breached window counts (an AUC over 2 breached windows means little)
and a stratified bootstrap 95 % interval of the AUC; the headline is the range over
cells with at least ``MIN_CLASS`` breached and ``MIN_CLASS`` calm windows. A run with
no such cell is summarised in one note when another run of the same trace has some
(by default Azure on 2P+2D, where almost nothing breaches; see ``DEFAULT_RUNS``). The
notes explain the scored cells with quantities known only after the window (its
request count, its longest prompt): explanation, never input to the prediction.

The replay runs the real controller core (``ControlPlanner`` through the replay's
``PlannerHook``). ``--mode advisory`` (default) computes the predictions but applies
none of the controller's actions: a throttle that works would prevent the breach it
predicted and make a right prediction look wrong. ``--mode closed`` lets it act.
"exported" is the probability the controller exports (calibrated online from past
windows once enough are labelled: ``policy/planner/breach_calibration.py``); "raw" is
the model's value before that (what the throttle and scaler act on).

    .venv/bin/python benchmarks/bench_breach_auc.py --record   # ~1 min CPU; the section
    .venv/bin/python benchmarks/bench_breach_auc.py \
        --run data/traces/synthetic_trace.jsonl@0.25,0.5,1@2x2 --local-prefill never
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.results_io import Headline, Result, Table, fmt, write_result  # noqa: E402
from controlplane.policy.control_fields import ControlState  # noqa: E402
from controlplane.policy.planner.breach import BreachParams  # noqa: E402
from controlplane.policy.planner.types import Effects  # noqa: E402
from controlplane.replay.accounting import Outcome  # noqa: E402
from controlplane.replay.control import PlannerHook  # noqa: E402
from controlplane.replay.driver import ControlOutput, ReplayConfig  # noqa: E402
from controlplane.replay.experiment import Options, build_experiment  # noqa: E402
from controlplane.replay.runner import run_once  # noqa: E402
from controlplane.schemas import RequestRecord, TenantSLA, WorkerSnapshot  # noqa: E402

GOAL_AUC = 0.75
MIN_CLASS = 5
"""A cell's AUC counts towards the headline only with this many breached and this many
not-breached windows."""
BOOTSTRAP = 2000
DEFAULT_RUNS = (
    "data/traces/AzureLLMInferenceTrace_code.csv@1,2,3,4,5@2x2",
    "data/traces/AzureLLMInferenceTrace_code.csv@1,2,3,4@1x1",
    "data/traces/synthetic_trace.jsonl@0.25,0.5,0.75,1@2x2",
)
"""Azure on 2P+2D (the set-up of earlier runs) breaches in a handful of windows; on 1P+1D
it breaches often enough to score (chosen from the breached-window counts, not from the
AUC). Scales are bounded by the traces' length: at xk the 57 min of Azure give 115/k
windows per tenant, the 17 min of Mooncake 34/k."""
TRACE_LABEL = {"AzureLLMInferenceTrace_code": "Azure code", "synthetic_trace": "Mooncake"}


@dataclass(frozen=True, slots=True)
class Point:
    scale: float
    tick_s: float
    tenant: str
    prob: float
    """Exported (calibrated once enough outcomes are labelled: ``breach_calibration``)."""
    breached: bool
    requests: int
    raw: float
    """The model's probability before calibration (what the throttle and scaler act on)."""
    misses: int = 0
    max_prompt_tokens: int = 0
    """Of the window's requests: known only afterwards (used to explain, never to predict)."""


class Recording(PlannerHook):
    """The replay's controller hook, keeping every tick's tenant risks."""

    def __init__(self, cfg: ReplayConfig, tenants: Mapping[str, TenantSLA], advisory: bool) -> None:
        super().__init__(cfg, tenants)
        self.advisory = advisory
        self.ticks: list[Effects] = []

    def tick(
        self,
        now_s: float,
        workers: Mapping[str, WorkerSnapshot],
        records: Sequence[RequestRecord],
        replicas: Mapping[str, int],
    ) -> ControlOutput:
        out = super().tick(now_s, workers, records, replicas)
        assert self.last_effects is not None
        self.ticks.append(self.last_effects)
        if self.advisory:
            # the gateways follow none of it: the next tick must not read back drains,
            # weights or admit fractions that were never applied (it did, and priced
            # TTFT/ITL without a decode worker it had "drained" while it still served)
            self.control = ControlState(version=self.control.version)
            return ControlOutput(next_tick_s=out.next_tick_s, decisions=out.decisions)
        return out


def window_ticks(ticks: Iterable[Effects], horizon_s: float, warmup_s: float) -> list[Effects]:
    """One tick per horizon: the first at or after ``warmup_s``, then each first tick at
    least ``horizon_s`` after the last one taken, so (tick, tick + horizon] never overlap."""
    out: list[Effects] = []
    for eff in sorted(ticks, key=lambda e: e.now_s):
        if eff.now_s < warmup_s or (out and eff.now_s < out[-1].now_s + horizon_s):
            continue
        out.append(eff)
    return out


def label_windows(
    ticks: Sequence[Effects],
    outcomes: Sequence[Outcome],
    slas: Mapping[str, TenantSLA],
    horizon_s: float,
    warmup_s: float,
    scale: float,
) -> list[Point]:
    """One point per (non-overlapping window, tenant with requests in it)."""
    by_tenant: dict[str, tuple[list[float], list[bool], list[int]]] = {}
    for o in sorted(outcomes, key=lambda o: o.arrival_s):
        arr, met, prompt = by_tenant.setdefault(o.tenant, ([], [], []))
        arr.append(o.arrival_s)
        met.append(o.met)
        prompt.append(o.prompt_tokens)
    cum = {t: np.concatenate([[0], np.cumsum(m)]) for t, (_, m, _) in by_tenant.items()}
    points = []
    for eff in window_ticks(ticks, horizon_s, warmup_s):
        for tenant, risk in eff.risks.items():
            if tenant not in by_tenant or tenant not in slas:
                continue
            arr = by_tenant[tenant][0]
            lo = bisect.bisect_right(arr, eff.now_s)
            hi = bisect.bisect_right(arr, eff.now_s + horizon_s)
            n = hi - lo
            if n == 0:
                continue
            n_met = int(cum[tenant][hi] - cum[tenant][lo])
            breached = n_met / n < slas[tenant].objective
            raw = (risk.raw_breach_probability or risk.breach_probability).get("all", 0.0)
            longest = max(by_tenant[tenant][2][lo:hi])
            points.append(Point(scale, eff.now_s, tenant, risk.breach, breached, n, raw,
                                n - n_met, longest))  # fmt: skip
    return points


def _pair_matrix(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """1 where a breached window scored above a calm one, 0.5 on ties, else 0."""
    d = pos[:, None] - neg[None, :]
    out: np.ndarray = (d > 0).astype(float) + 0.5 * (d == 0)
    return out


def auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC AUC (the Mann-Whitney probability); None unless both classes are present."""
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    return float(_pair_matrix(pos, neg).mean())


def auc_interval(
    y: np.ndarray, s: np.ndarray, n_boot: int = BOOTSTRAP, seed: int = 0
) -> tuple[float, float] | None:
    """95 % stratified bootstrap interval: breached and calm windows are resampled
    separately (so every replicate keeps the cell's counts)."""
    pos, neg = s[y], s[~y]
    if len(pos) < 2 or len(neg) < 2:
        return None
    rng = np.random.default_rng(seed)
    m = _pair_matrix(pos, neg)
    cp = rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), size=n_boot)
    cn = rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), size=n_boot)
    boot = np.einsum("bp,pn,bn->b", cp, m, cn) / (len(pos) * len(neg))
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return float(lo), float(hi)


@dataclass(frozen=True, slots=True)
class Cell:
    windows: int
    breached: int
    auc: float | None
    auc_ci: tuple[float, float] | None
    auc_raw: float | None
    brier: float | None
    brier_raw: float | None
    mean_p_breached: float | None
    mean_p_calm: float | None
    auc_hindsight: float | None
    """AUC of the window's longest prompt, known only after the window (explains, never
    predicts)."""

    @property
    def calm(self) -> int:
        return self.windows - self.breached

    @property
    def countable(self) -> bool:
        return min(self.breached, self.calm) >= MIN_CLASS

    @property
    def base_rate_brier(self) -> float:
        """p (1 - p) of the cell's own breach rate: what its constant rate scores."""
        p = self.breached / self.windows if self.windows else 0.0
        return p * (1 - p)


def score(points: Sequence[Point], ci: bool = True) -> Cell:
    y = np.array([p.breached for p in points], dtype=bool)
    s = np.array([p.prob for p in points], dtype=float)
    r = np.array([p.raw for p in points], dtype=float)
    h = np.array([p.max_prompt_tokens for p in points], dtype=float)
    n = len(y)
    return Cell(
        windows=n,
        breached=int(y.sum()),
        auc=auc(y, s),
        auc_ci=auc_interval(y, s) if ci else None,
        auc_raw=auc(y, r),
        brier=float(np.mean((s - y) ** 2)) if n else None,
        brier_raw=float(np.mean((r - y) ** 2)) if n else None,
        mean_p_breached=float(s[y].mean()) if y.any() else None,
        mean_p_calm=float(s[~y].mean()) if (~y).any() else None,
        auc_hindsight=auc(y, h),
    )


def auc_text(c: Cell) -> str:
    """``0.62 [0.48, 0.75] (37/67)``: AUC, its 95 % interval, breached / windows."""
    if c.auc is None:
        return f"- ({c.breached}/{c.windows})"
    ci = f" [{c.auc_ci[0]:.2f}, {c.auc_ci[1]:.2f}]" if c.auc_ci else ""
    return f"{c.auc:.2f}{ci} ({c.breached}/{c.windows})"


def brier_text(points: Sequence[Point], cells: Sequence[Cell]) -> str:
    """Brier exported / raw / of the per-cell base rates (window-weighted)."""
    c = score(points, ci=False)
    n = sum(x.windows for x in cells)
    base = sum(x.base_rate_brier * x.windows for x in cells) / n if n else None
    return f"{fmt(c.brier, 2)} / {fmt(c.brier_raw, 2)} / {fmt(base, 2)}"


@dataclass(frozen=True, slots=True)
class RunSpec:
    trace: Path
    scales: tuple[float, ...]
    prefill: int
    decode: int

    @property
    def label(self) -> str:
        name = TRACE_LABEL.get(self.trace.stem, self.trace.stem)
        return f"{name}, {self.prefill}P+{self.decode}D"


def parse_run(spec: str, prefill: int, decode: int) -> RunSpec:
    """``TRACE@SCALES[@PxD]``, e.g. ``data/traces/synthetic_trace.jsonl@0.5,1@2x2``."""
    path, _, rest = spec.partition("@")
    scales, _, shape = rest.partition("@")
    if shape:
        p, _, d = shape.partition("x")
        prefill, decode = int(p), int(d)
    trace = Path(path) if Path(path).is_absolute() else ROOT / path
    return RunSpec(trace, tuple(float(x) for x in (scales or "1").split(",")), prefill, decode)


def run_trace(
    run: RunSpec, args: argparse.Namespace, horizon_s: float
) -> tuple[list[Point], list[str], dict[float, float]]:
    advisory = args.mode == "advisory"
    hooks: list[Recording] = []

    def factory(cfg: ReplayConfig, tenants: Mapping[str, TenantSLA]) -> Recording:
        hooks.append(Recording(cfg, tenants, advisory))
        return hooks[-1]

    opts = Options(
        trace=run.trace, window=args.window, tenants=args.tenants, prefill=run.prefill,
        decode=run.decode, planner=True, control_interval_s=args.control_interval_s,
    )  # fmt: skip
    exp = build_experiment(opts, factory)
    if args.local_prefill:
        lp = {"local-prefill": {"mode": args.local_prefill}}
        exp = replace(exp, base=replace(exp.base, router_params=lp))
    slas = exp.mix.slas
    points: list[Point] = []
    attainment: dict[float, float] = {}
    for scale in run.scales:
        summary, res = run_once(exp, args.policy, scale)
        pts = label_windows(hooks[-1].ticks, res.outcomes, slas, horizon_s, args.warmup_s, scale)
        points += pts
        attainment[scale] = summary.attainment
        print(f"{run.label} x{scale:g}: attainment {summary.attainment:.3f}, {len(pts)} "
              f"tenant-windows, {sum(p.breached for p in pts)} breached", flush=True)  # fmt: skip
    return points, list(slas), attainment


def adjacent(points: Sequence[Point], horizon_s: float) -> list[tuple[Point, Point]]:
    """(window, the next window of the same tenant and scale when it follows directly)."""
    out = []
    for key in sorted({(p.tenant, p.scale) for p in points}):
        mine = sorted((p for p in points if (p.tenant, p.scale) == key), key=lambda p: p.tick_s)
        out += [(a, b) for a, b in itertools.pairwise(mine) if b.tick_s - a.tick_s < 2 * horizon_s]
    return out


def _range(xs: Sequence[float | None]) -> str:
    v = [x for x in xs if x is not None]
    return f"{min(v):.2f}-{max(v):.2f}" if v else "-"


def why_note(label: str, cells: Sequence[tuple[Cell, list[Point]]], horizon_s: float) -> str:
    """Why the scored cells rank as they do: what P says about the window that just
    ended, whether breaches persist, and what (known only afterwards) does rank them."""
    pb = np.mean([c.mean_p_breached for c, _ in cells if c.mean_p_breached is not None])
    pc = np.mean([c.mean_p_calm for c, _ in cells if c.mean_p_calm is not None])
    lag, persist, n_auc = [], [], []
    for _, pts in cells:
        pairs = adjacent(pts, horizon_s)
        prev = np.array([a.breached for a, _ in pairs], dtype=bool)
        nxt = np.array([b.breached for _, b in pairs], dtype=bool)
        lag.append(auc(prev, np.array([b.prob for _, b in pairs], dtype=float)))
        persist.append(auc(nxt, prev.astype(float)))
        y = np.array([p.breached for p in pts], dtype=bool)
        n_auc.append(auc(y, np.array([p.requests for p in pts], dtype=float)))
    return (
        f"{label}, the {len(cells)} scored cells: exported P averages {pb:.2f} on breached and "
        f"{pc:.2f} on calm windows. It ranks the window that just ended at AUC {_range(lag)} "
        f"(the next one: {_range([c.auc for c, _ in cells])}); the last window's label ranks the "
        f"next at {_range(persist)}. Known only afterwards, the window's request count ranks "
        f"them at {_range(n_auc)}, its longest prompt at "
        f"{_range([c.auc_hindsight for c, _ in cells])}."
    )


@dataclass(slots=True)
class RunReport:
    run: RunSpec
    headline: Headline
    table: Table
    notes: list[str]
    scored: int
    """Cells with enough windows of each class to count."""
    summary: str
    """One line for a run that scores nothing: its breached-window counts."""
    detail: list[str]
    """Every cell with its raw AUC and Briers (printed, not written)."""


def report_run(
    run: RunSpec,
    points: Sequence[Point],
    tenants: Sequence[str],
    attainment: Mapping[float, float],
    args: argparse.Namespace,
    horizon_s: float,
) -> RunReport:
    """One headline row, one table (tenants x scales) and the notes of one run."""
    rows: list[list[object]] = []
    scored: list[tuple[Cell, list[Point]]] = []
    all_cells: list[Cell] = []
    detail = []
    for t in tenants:
        mine = [p for p in points if p.tenant == t]
        for s in run.scales:
            pts = [p for p in mine if p.scale == s]
            c = score(pts)
            all_cells.append(c)
            if c.countable:
                scored.append((c, pts))
            detail.append(
                f"{run.label} x{s:g} {t}: AUC {auc_text(c)} raw {fmt(c.auc_raw, 2)}; Brier "
                f"{fmt(c.brier, 2)} raw {fmt(c.brier_raw, 2)} base {fmt(c.base_rate_brier, 2)}; "
                f"mean P breached {fmt(c.mean_p_breached, 2)} calm {fmt(c.mean_p_calm, 2)}"
            )
        cells = all_cells[-len(run.scales) :]
        rows.append([t, *map(auc_text, cells), auc_text(score(mine)), brier_text(mine, cells)])
    pooled_scales = [score([p for p in points if p.scale == s]) for s in run.scales]
    everything = score(points)
    rows.append(["all tenants (pooled)", *map(auc_text, pooled_scales), auc_text(everything),
                 brier_text(points, all_cells)])  # fmt: skip
    rows.append(["SLA attainment, all requests", *(f"{attainment[s]:.3f}" for s in run.scales),
                 "", ""])  # fmt: skip
    aucs = [c.auc for c, _ in scored if c.auc is not None]
    if aucs:
        got = f"{min(aucs):.2f}-{max(aucs):.2f} ({len(aucs)} of {len(all_cells)} cells)"
        met = min(aucs) >= GOAL_AUC
    else:
        worst = max(min(c.breached, c.calm) for c in all_cells)
        got = f"not measurable: no cell has {MIN_CLASS} breached and calm windows (best: {worst})"
        met = False
    scales = ", ".join(f"x{s:g}" for s in run.scales)
    headline = Headline(
        question=f"Per tenant, does the exported breach probability foresee which 30-s windows "
        f"break the objective ({run.label})?",
        metric=f"AUC per tenant and rate scale (cells with >= {MIN_CLASS} breached and >= "
        f"{MIN_CLASS} calm windows)",
        slaplane=got,
        baseline=f"chance 0.5 (pooled over tenants and scales: {fmt(everything.auc, 2)}, "
        "not a per-tenant figure)",
        goal=f">= {GOAL_AUC} in every such cell",
        met=met,
        conditions=f"{args.mode} controller, trace {args.window} s at {scales}, three-tier mix, "
        f"h100, `{args.policy}` routing, non-overlapping {horizon_s:g}-s windows",
    )
    cols = ["tenant", *(f"x{s:g}" for s in run.scales), "all scales (pooled)",
            "Brier exported / raw / base rate"]  # fmt: skip
    table = Table(
        f"{run.label}: AUC of the exported probability [95% CI] (breached / windows)", cols, rows
    )
    notes = [why_note(run.label, scored, horizon_s)] if scored else []
    most = max(min(c.breached, c.calm) for c in all_cells)
    summary = (
        f"{run.label} at {scales} (attainment {min(attainment.values()):.3f}-"
        f"{max(attainment.values()):.3f}): {everything.breached} breached of {everything.windows} "
        f"tenant-windows, at most {most} in one cell: too few to score per tenant."
    )
    return RunReport(run, headline, table, notes, len(scored), summary, detail)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--run",
        action="append",
        metavar="TRACE@SCALES[@PxD]",
        help=f"trace, rate scales, cluster (repeatable; default {' '.join(DEFAULT_RUNS)})",
    )
    ap.add_argument("--tenants", type=Path, default=ROOT / "data/tenants/three-tier.yaml")
    ap.add_argument("--window", default="0:3600", help="trace seconds START:END")
    ap.add_argument("--prefill", type=int, default=2, help="when a --run names no cluster")
    ap.add_argument("--decode", type=int, default=2, help="when a --run names no cluster")
    ap.add_argument("--policy", default="sla")
    ap.add_argument("--mode", choices=("advisory", "closed"), default="advisory")
    ap.add_argument("--control-interval-s", type=float, default=5.0)
    ap.add_argument("--warmup-s", type=float, default=60.0)
    ap.add_argument(
        "--local-prefill",
        choices=("never", "threshold", "predictive"),
        help="the router's local prefill mode (default: the policy's own)",
    )
    ap.add_argument(
        "--record", action="store_true", help="write benchmarks/results/breach_prediction.json"
    )
    args = ap.parse_args()

    horizon = BreachParams().horizon_s
    result = Result(
        section="breach_prediction",
        title="Tenant-level breach prediction (what the controller exports and acts on)",
        question='Per tenant, does `slaplane_predicted_sla_breach_probability{slo="all"}` '
        "at a tick tell which of the next 30-s windows will break the tenant's objective?",
        order=60,
    )
    reports = []
    for spec in args.run or DEFAULT_RUNS:
        run = parse_run(spec, args.prefill, args.decode)
        points, tenants, attainment = run_trace(run, args, horizon)
        reports.append(report_run(run, points, tenants, attainment, args, horizon))
        print("\n".join(reports[-1].detail))
    scored_traces = {r.run.trace for r in reports if r.scored}
    for r in reports:
        if r.scored or r.run.trace not in scored_traces:
            result.headline.append(r.headline)
            result.tables.append(r.table)
            result.notes += r.notes
        else:  # another run of this trace scores: this one is only context
            result.notes.append(r.summary)
    if result.tables:
        result.tables[0].note = (
            f"One window per {horizon:g} s (the first tick after {args.warmup_s:g} s of warm-up, "
            f"then the first tick >= {horizon:g} s later); breached: the tenant's requests "
            "arriving in the window met the SLA less often than its objective. CI: stratified "
            f"bootstrap ({BOOTSTRAP} resamples). Brier base rate: each (tenant, scale) cell's own "
            "breach rate as a constant forecast."
        )
    for h, t in zip(result.headline, result.tables, strict=True):
        print(f"\n{h.question}\n  {h.slaplane} (goal {h.goal}, met {h.met}); {h.baseline}")
        print("| " + " | ".join(t.columns) + " |")
        for row in t.rows:
            print("| " + " | ".join(str(x) for x in row) + " |")
    for n in result.notes:
        print("-", n)
    if args.record:
        print(write_result(result))


if __name__ == "__main__":
    main()
