"""slaplane replay vs NVIDIA Dynamo's DynoSim (``python -m dynamo.replay``), like for like.

Both simulators get the same trace, the same per-step latency table (slaplane's
profile → DynoSim's mocker NPZ via ``make_npz.py``), the same KV capacity, batch
limits, SLA and GPU count (4). Each gain is attributed to the layer that made it:

* routing alone (slaplane admission off): slaplane's four routers vs DynoSim's round
  robin and KV router;
* + admission: slaplane's SLA admission (DynoSim has none);
* + planner: slaplane's planner / DynoSim's planner (throughput target, KV router),
  both under the same 4-GPU budget;

each on 2P+2D disaggregated workers and on 4 aggregated ones (slaplane role ``both``),
so slaplane is held against DynoSim's *best* configuration, not only its P/D one. A
third P/D column runs slaplane with DynoSim 1.4.2's prefill hold modelled
(``emulate.py``: its prefill worker generates the whole planned output before the
hand-off, a bug fixed upstream in ai-dynamo/dynamo PR #13052), which tells how much of
the P/D gap is that bug. ``perrequest.py`` explains it request by request.

Writes ``benchmarks/results/dynosim.json`` (section ``dynosim`` of the results page:
one headline row per trace x SLA, one compact table per trace) and the full tables
plus the per-request analysis to ``--out`` (``benchmarks/dynosim/results.md``).

    .venv/bin/python -m benchmarks.dynosim.compare --physics mocker

Physics (``--physics``). The mocker's prefill table is 1-D: a step costs
``prefill_ms(tokens in the step)`` whatever is already in KV, so a 40k prompt chunked
at 8,192 costs 5 x ~200 ms = 977 ms, while slaplane's engine adds the attention over
the cached prefix from the profile's ``prefill_with_prefix`` rows (1,495 ms, as the
one-piece row says: 1,482 ms). So:

* ``mocker`` (default, the comparison): slaplane runs on a copy of the profile without
  the ``prefill_with_prefix`` rows: both simulators charge every step the same
  ``prefill_ms(tokens)`` / ``decode_ms(batch, ctx)``, identical physics;
* ``unchunked``: both get ``max_num_batched_tokens = max_model_len``;
* ``profile``: the profile as shipped (what the replay CLI uses): different physics.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if str(Path(__file__).resolve().parents[2]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.dynosim import dynamo_run
from benchmarks.dynosim.emulate import run_traced
from benchmarks.results_io import Headline, Result, Table, write_result
from controlplane.profiles import load_profile, profile_path
from controlplane.replay.control import planner_factory
from controlplane.replay.experiment import Options, build_experiment
from controlplane.replay.traces import read_trace

ROOT = Path(__file__).resolve().parents[2]
MOONCAKE = ROOT / "data/traces/synthetic_trace.jsonl"
AZURE = ROOT / "data/traces/AzureLLMInferenceTrace_code.csv"
POLICIES = ("round_robin", "least_loaded", "kv_aware", "sla")
LAYERS = ("routing", "admission", "planner")
"""routing = admission off; admission = slaplane's SLA admission; planner = + planner."""
PD, AGG = "2P+2D", "4x"
DYN, SL, HOLD = "DynoSim", "slaplane", "slaplane + DynoSim's hold"
COLUMNS = ((DYN, PD), (SL, PD), (HOLD, PD), (DYN, AGG), (SL, AGG))
"""The full grid (one row per trace x SLA x layer): the section's second table."""
PAGE_COLUMNS: tuple[tuple[str, str, str | None, str], ...] = (
    ("DynoSim 2P+2D", DYN, PD, "routing"),
    ("DynoSim 4x", DYN, AGG, "routing"),
    ("DynoSim +planner", DYN, None, "planner"),
    ("slaplane 2P+2D routing", SL, PD, "routing"),
    ("same + DynoSim's hold", HOLD, PD, "routing"),
    ("slaplane 4x routing", SL, AGG, "routing"),
    ("slaplane +admission", SL, None, "admission"),
    ("slaplane +planner", SL, None, "planner"),
)
"""The page table, one row per trace x SLA: (header, system, shape or None = the best
shape, layer); routing = admission off."""


@dataclass(frozen=True)
class Row:
    system: str
    shape: str
    layer: str
    config: str
    attainment: float
    goodput_rps: float
    mean_gpus: float
    wall_s: float

    @property
    def per_gpu(self) -> float:
        return self.goodput_rps / self.mean_gpus if self.mean_gpus else 0.0


def azure_to_mooncake(src: Path, dst: Path) -> Path:
    """Azure CSV → Mooncake JSONL with unique hash ids (no prefix reuse, as in slaplane)."""
    tr = read_trace(src)
    nxt = 10_000_000
    with dst.open("w") as f:
        for r in tr.requests:
            n = -(-r.prompt_tokens // 512)
            f.write(
                json.dumps(
                    {
                        "timestamp": round(r.arrival_s * 1000),
                        "input_length": r.prompt_tokens,
                        "output_length": r.output_tokens,
                        "hash_ids": list(range(nxt, nxt + n)),
                    }
                )
                + "\n"
            )
            nxt += n
    return dst


def aligned_profile(profile: str, physics: str, work: Path) -> str:
    """A profile CSV for ``physics`` (see the module doc); returns its path or name."""
    if physics == "profile":
        return profile
    src = load_profile(profile)
    path = profile_path(profile)
    lines = path.read_text().splitlines()
    out: list[str] = []
    for line in lines:
        if line.startswith("# slaplane-profile") and physics == "unchunked":
            line = line.replace(
                f"max_num_batched_tokens={src.max_num_batched_tokens}",
                f"max_num_batched_tokens={src.max_model_len}",
            )
        if physics == "mocker" and line.startswith("prefill_with_prefix,"):
            continue
        out.append(line)
    dst = work / f"{src.name}-{physics}.csv"
    dst.write_text("\n".join(out) + "\n")
    return str(dst)


def span_s(trace: Path, scale: float) -> float:
    return read_trace(trace).duration_s / scale


def dynosim(
    trace: Path, npz: Path, profile: str, shape: str, router: str, planner: bool,
    scale: float, ttft: float, itl: float, work: Path,
) -> Row:  # fmt: skip
    sizes = {"prefill": 2, "decode": 2} if shape == PD else {"workers": 4}
    tag = f"{shape}-{router}-{int(planner)}"
    r = dynamo_run.run(
        trace, npz, profile, work, router=router, scale=scale, ttft_ms=ttft, itl_ms=itl,
        planner=planner, tag=tag, **sizes,
    ).report  # fmt: skip
    dur_s = r["duration_ms"] / 1000.0
    gpu_s = r.get("gpu_hours", 0.0) * 3600.0
    n = r["num_requests"]
    met = r["goodput_completed_requests"]
    # DynoSim divides goodput by its own duration (first arrival → last finish);
    # re-express it over the offered span like slaplane does, for one yardstick.
    return Row(
        DYN, shape, "planner" if planner else "routing",
        router + (" +planner" if planner else ""), met / n, met / span_s(trace, scale),
        gpu_s / dur_s, 0.0,
    )  # fmt: skip


def slaplane(
    trace: Path, profile: str, shape: str, layer: str, policy: str, scale: float,
    ttft: float, itl: float, hold: bool = False,
) -> Row:  # fmt: skip
    planner = layer == "planner"
    pd = shape == PD
    opts = Options(
        trace=trace, profile=profile, ttft_ms=ttft, itl_ms=itl, admission=layer != "routing",
        planner=planner, gpu_budget=4 if planner else None, prefill=2 if pd else 0,
        decode=2 if pd else 0, workers=0 if pd else 4,
    )  # fmt: skip
    exp = build_experiment(opts, planner_factory() if planner else None)
    s, res, _ = run_traced(exp, policy, scale, hold=hold)
    return Row(
        HOLD if hold else SL, shape, layer, policy, s.attainment, s.goodput_rps, s.mean_gpus,
        res.wall_s,
    )  # fmt: skip


def best(rows: Sequence[Row], system: str, shape: str | None = None, layer: str | None = None
         ) -> Row | None:  # fmt: skip
    pick = [
        r for r in rows
        if r.system == system and (shape is None or r.shape == shape)
        and (layer is None or r.layer == layer)
    ]  # fmt: skip
    return max(pick, key=lambda r: r.per_gpu, default=None)


def label(r: Row) -> str:
    return f"{r.config}, {r.shape}" + (f", {r.layer}" if r.system != DYN else "")


def detail_table(rows: Sequence[Row], title: str) -> str:
    top = {s: best(rows, s) for s in (DYN, SL, HOLD)}
    out = [
        f"### {title}",
        "",
        "| simulator | shape | layer | configuration | attainment | goodput (req/s) "
        "| mean GPUs | goodput/GPU | wall (s) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = " **best**" if r is top[r.system] else ""
        wall = f"{r.wall_s:.1f}" if r.wall_s else "-"
        out.append(
            f"| {r.system} | {r.shape} | {r.layer} | {r.config}{mark} | {100 * r.attainment:.1f}%"
            f" | {r.goodput_rps:.3f} | {r.mean_gpus:.2f} | {r.per_gpu:.3f} | {wall} |"
        )
    d, s = top[DYN], top[SL]
    if d is not None and s is not None and d.per_gpu > 0:
        out += [
            "",
            f"best slaplane ({label(s)}) / best DynoSim ({label(d)}) goodput per GPU: "
            f"**{s.per_gpu / d.per_gpu:.2f}x**",
        ]
    return "\n".join([*out, ""])


def _cell(r: Row | None, shape: bool = False) -> str:
    if r is None:
        return "-"
    name = r.config.removesuffix(" +planner")
    return f"{r.per_gpu:.3f} {name}" + (f" {r.shape}" if shape else "")


def result(
    runs: Sequence[tuple[str, float, tuple[float, float], Sequence[Row]]],
    physics: str,
    notes: Sequence[str] = (),
) -> Result:
    """The page section from the runs: (trace name, scale, (ttft, itl), rows) each."""
    heads: list[Headline] = []
    page: list[list[str]] = []
    grid: list[list[str]] = []
    for name, scale, (ttft, itl), rows in runs:
        d, s = best(rows, DYN), best(rows, SL)
        sla = f"{ttft:g}/{itl:g}"
        if d is not None and s is not None:
            ratio = s.per_gpu / d.per_gpu if d.per_gpu else float("inf")
            heads.append(
                Headline(
                    question="Does slaplane beat NVIDIA DynoSim's best configuration, like "
                    "for like?",
                    metric="goodput per GPU (req/s/GPU), same step tables",
                    slaplane=f"{s.per_gpu:.3f} ({label(s)})",
                    baseline=f"{d.per_gpu:.3f} (DynoSim {dynamo_run.VERSION} {label(d)})",
                    goal="> best DynoSim",
                    met=s.per_gpu > d.per_gpu,
                    conditions=f"{name} x{scale:g}, 4 GPUs, TTFT/TPOT {sla} ms, physics "
                    f"{physics}: {ratio:.2f}x",
                )
            )
        page.append(
            [
                f"{name} x{scale:g}, {sla}",
                *(_cell(best(rows, sys_, shape, layer), shape is None)
                  for _, sys_, shape, layer in PAGE_COLUMNS),
            ]
        )  # fmt: skip
        for layer in LAYERS:
            grid.append(
                [f"{name} x{scale:g}", sla, layer,
                 *(_cell(best(rows, sys_, shape, layer)) for sys_, shape in COLUMNS)]
            )  # fmt: skip
    return Result(
        section="dynosim",
        title="slaplane vs NVIDIA DynoSim, like for like",
        question="With identical step physics, trace, SLA and 4 GPUs, how much goodput per "
        "GPU does each layer (routing, admission, planner) of slaplane add, against "
        "DynoSim's routers, planner and aggregated workers?",
        headline=heads,
        tables=[
            Table(
                title="goodput per GPU (req/s/GPU) of the best configuration per column",
                columns=["trace, TTFT/TPOT ms", *(c[0] for c in PAGE_COLUMNS)],
                rows=page,
            ),
            Table(
                title="every shape x layer: goodput per GPU of the best configuration",
                columns=[
                    "trace",
                    "TTFT/TPOT ms",
                    "layer",
                    *(f"{sys_} {shape}" for sys_, shape in COLUMNS),
                ],
                rows=grid,
            ),
        ],
        notes=list(notes),
        order=40,
    )


def combo(
    mc: Path, native: Path, npz: Path, prof: str, scale: float, ttft: float, itl: float,
    policies: Sequence[str], work: Path, say: Callable[[str], None],
) -> list[Row]:  # fmt: skip
    """Every row of one trace x SLA: DynoSim's 6 configurations, slaplane's policies on
    each shape and layer (P/D also with DynoSim's hold modelled)."""
    rows: list[Row] = []
    for shape in (PD, AGG):
        for router, planner in (("round_robin", False), ("kv_router", False), ("kv_router", True)):
            try:
                rows.append(dynosim(mc, npz, prof, shape, router, planner, scale, ttft, itl, work))
            except RuntimeError as exc:
                say(str(exc))
    say(f"  DynoSim done ({ttft:g}/{itl:g})")
    for shape in (PD, AGG):
        for layer in LAYERS:
            for pol in policies:
                for hold in (False, True) if shape == PD else (False,):
                    rows.append(slaplane(native, prof, shape, layer, pol, scale, ttft, itl, hold))
            say(f"  slaplane {shape} {layer} done")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="h100-llama3.1-8b")
    ap.add_argument("--azure-scale", type=float, default=3.0)
    ap.add_argument("--mooncake-scale", type=float, default=1.0)
    ap.add_argument("--physics", choices=("mocker", "unchunked", "profile"), default="mocker")
    ap.add_argument("--traces", default="azure,mooncake", help="comma list: azure,mooncake")
    ap.add_argument("--sla", action="append", default=None, help="TTFT_MS/ITL_MS, repeatable")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/dynosim/results.md")
    ap.add_argument("--no-record", action="store_true", help="do not write results/dynosim.json")
    a = ap.parse_args(argv)
    slas = [(float(t), float(i)) for t, i in (s.split("/") for s in a.sla or ["2000/50", "500/25"])]
    policies = a.policies.split(",")
    from benchmarks.dynosim.make_npz import build
    from benchmarks.dynosim.perrequest import analyse

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    runs: list[tuple[str, float, tuple[float, float], list[Row]]] = []
    sections: list[str] = []
    why, why_note = "", ""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prof = aligned_profile(a.profile, a.physics, work)
        npz = build(prof, work / "perf.npz")
        az = azure_to_mooncake(AZURE, work / "azure.jsonl")
        traces = [
            ("Azure code", AZURE, az, a.azure_scale),
            ("Mooncake", MOONCAKE, MOONCAKE, a.mooncake_scale),
        ]
        want = a.traces.split(",")
        traces = [t for t in traces if t[0].split()[0].lower() in want]
        for name, native, mc, scale in traces:
            for ttft, itl in slas:
                rows = combo(mc, native, npz, prof, scale, ttft, itl, policies, work, say)
                title = f"{name} x{scale:g}, 4 GPUs, TTFT {ttft:g} ms / TPOT {itl:g} ms, physics "
                title += a.physics
                sections.append(detail_table(rows, title))
                print(sections[-1], flush=True)
                runs.append((name, scale, (ttft, itl), rows))
        if "mooncake" in want:
            why, why_note = analyse(MOONCAKE, npz, prof, work, a.mooncake_scale, *slas[0])
            print(why, flush=True)
    notes = [
        *([why_note] if why_note else []),
        "Same step tables (DynoSim's NPZ = slaplane's profile without prefix-attention rows), "
        "KV, 8,192-token chunks; routing = admission off; +admission = slaplane's SLA admission "
        "(DynoSim has none); +planner = 4-GPU budget (DynoSim: throughput planner).",
        f"DynoSim {dynamo_run.VERSION}'s P/D prefill worker decodes the whole planned output "
        "before the hand-off (fixed upstream: ai-dynamo/dynamo#13052); the hold column models it.",
        "Goodput = met requests / offered span, per mean GPU held; full tables, per-request join "
        "and the controlled case: benchmarks/dynosim/results.md.",
    ]
    page = result(runs, a.physics, notes)
    header = [
        "# slaplane vs DynoSim: full tables",
        "",
        f"Generated by `benchmarks/dynosim/compare.py` (DynoSim = ai-dynamo "
        f"{dynamo_run.VERSION} mocker, physics {a.physics}). {HOLD} = slaplane with DynoSim "
        f"{dynamo_run.VERSION}'s prefill hold modelled (`emulate.py`). Page summary: section "
        "`dynosim` of benchmarks/RESULTS.md.",
        "",
    ]
    a.out.write_text("\n".join([*header, *sections, why]).rstrip() + "\n")
    print(f"wrote {a.out}", file=sys.stderr)
    if not a.no_record:
        print(f"wrote {write_result(page)}", file=sys.stderr)


if __name__ == "__main__":
    main()
