"""``slaplane replay``: replay a trace through the policy core on modelled workers.

Heavy imports (numpy, matplotlib, the engine) happen inside ``main`` so
``slaplane --help`` stays fast.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

POLICIES = "round_robin,least_loaded,kv_aware,sla"


def main(
    trace: Annotated[Path, typer.Option("--trace", help="Azure CSV or Mooncake JSONL trace.")],
    fmt: Annotated[str, typer.Option("--format", help="auto | azure | mooncake")] = "auto",
    rate_scale: Annotated[
        float, typer.Option("--rate-scale", help="Arrival rate multiplier (2 = twice as fast).")
    ] = 1.0,
    window: Annotated[
        str | None,
        typer.Option("--window", help="Trace seconds START:END (before rate scaling)."),
    ] = None,
    tenants: Annotated[
        Path | None,
        typer.Option("--tenants", help="Tenant mix YAML/JSON (data/tenants/); default: one SLA."),
    ] = None,
    ttft_ms: Annotated[float, typer.Option("--ttft-ms", help="SLA without --tenants.")] = 2000.0,
    itl_ms: Annotated[float, typer.Option("--itl-ms", help="SLA without --tenants.")] = 50.0,
    prefill: Annotated[int, typer.Option("--prefill", help="Prefill workers (P/D).")] = 0,
    decode: Annotated[int, typer.Option("--decode", help="Decode workers (P/D).")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Mixed (role both) workers.")] = 0,
    profile: Annotated[
        str, typer.Option("--profile", help="Latency profile: shipped name or CSV path.")
    ] = "h100-llama3.1-8b",
    planner: Annotated[
        bool, typer.Option("--planner/--no-planner", help="Run the controller on a virtual tick.")
    ] = False,
    gpu_budget: Annotated[
        int | None, typer.Option("--gpu-budget", help="Most GPUs the planner may use.")
    ] = None,
    policies: Annotated[str, typer.Option("--policies", help="Comma-separated.")] = POLICIES,
    sweep: Annotated[
        bool, typer.Option("--sweep-rate", help="Find each policy's highest ≥90% rate scale.")
    ] = False,
    sweep_target: Annotated[float, typer.Option("--sweep-target")] = 0.9,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    plot_dir: Annotated[Path | None, typer.Option("--plot", help="Write PNG figures here.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Tenant assignment seed.")] = 0,
    publish_interval_s: Annotated[
        float, typer.Option("--publish-interval-s", help="Telemetry staleness (0 = exact).")
    ] = 0.25,
    admission: Annotated[
        bool, typer.Option("--admission/--no-admission", help="Gateway admission control.")
    ] = True,
    kv_transfer_ms: Annotated[
        float, typer.Option("--kv-transfer-ms", help="Fixed P→D KV transfer delay.")
    ] = 0.0,
    kv_transfer_us_per_token: Annotated[
        float,
        typer.Option("--kv-transfer-us-per-token", help="Per prompt-token P→D transfer delay."),
    ] = 0.0,
    local_prefill: Annotated[
        str | None,
        typer.Option(
            "--local-prefill",
            help="Conditional disaggregation for every policy: never | threshold | predictive "
            "(default: the policy's own, predictive for sla, never for the baselines).",
        ),
    ] = None,
    router_params: Annotated[
        str | None,
        typer.Option(
            "--router-params",
            help="Router params JSON, e.g. "
            '\'{"local-prefill": {"max_local_prefill_length": 512}}\'.',
        ),
    ] = None,
    admission_params: Annotated[
        str | None,
        typer.Option(
            "--admission-params",
            help="Admission params JSON (the gateway's --admission-params), e.g. "
            '\'{"displace": {"enabled": false}}\'.',
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Replay a trace against modelled workers with each routing policy; report goodput."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from controlplane.replay.accounting import Outcome, RunSummary
    from controlplane.replay.experiment import Options, build_experiment, meta
    from controlplane.replay.report import document, print_report
    from controlplane.replay.runner import SweepResult, run_once, sweep_rate

    if not (prefill or decode or workers):
        prefill, decode = 2, 2
    opts = Options(
        trace=trace, fmt=fmt, window=window, tenants=tenants, ttft_ms=ttft_ms, itl_ms=itl_ms,
        prefill=prefill, decode=decode, workers=workers, profile=profile, seed=seed,
        publish_interval_s=publish_interval_s, admission=admission, kv_transfer_ms=kv_transfer_ms,
        kv_transfer_us_per_token=kv_transfer_us_per_token,
        planner=planner, gpu_budget=gpu_budget,
    )  # fmt: skip
    control = None
    if planner:
        from controlplane.replay.control import planner_factory

        control = planner_factory()
    try:
        exp = build_experiment(opts, control)
        rparams = _router_params(router_params, local_prefill)
        aparams = _admission_params(admission_params)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if rparams:
        exp = replace(exp, base=replace(exp.base, router_params=rparams))
    if aparams:
        exp = replace(exp, base=replace(exp.base, admission_params=aparams))
    names = [p.strip() for p in policies.split(",") if p.strip()]
    console = Console(stderr=True)
    n = len(exp.trace.requests)
    runs: list[RunSummary] = []
    outcomes: dict[str, list[Outcome]] = {}
    sweeps: list[SweepResult] = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, disable=quiet, transient=True,
    ) as bar:  # fmt: skip
        for name in names:
            task = bar.add_task(f"{name} x{rate_scale:g}", total=n)

            def advance(k: int, task: TaskID = task) -> None:
                bar.update(task, completed=k)

            summary, res = run_once(exp, name, rate_scale, advance)
            runs.append(summary)
            outcomes[name] = res.outcomes
        for name in names if sweep else ():
            task = bar.add_task(f"sweep {name}", total=14)

            def tried(s: RunSummary, task: TaskID = task) -> None:
                desc = f"sweep {s.policy} x{s.rate_scale:.2f} attain={100 * s.attainment:.1f}%"
                bar.update(task, advance=1, description=desc)

            sweeps.append(sweep_rate(exp, name, target=sweep_target, on_run=tried))
            bar.update(task, completed=14)
    out = Console()
    if not out.is_terminal:
        out = Console(width=200)  # a pipe or file: do not squeeze the table to 80 columns
    title = f"{exp.trace.name} on {exp.base.shape.label()} ({profile})"
    print_report(out, runs, sweeps, exp.capacity, exp.trace.mean_rate_rps, title)
    if json_out is not None:
        doc = document(
            meta=meta(exp, opts, rate_scale), runs=runs, sweeps=sweeps, capacity=exp.capacity
        )
        doc["router_params"] = rparams
        doc["admission_params"] = aparams
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(doc, indent=2))
    if plot_dir is not None:
        from controlplane.replay.plots import write_plots

        for p in write_plots(plot_dir, runs, outcomes, sweeps):
            out.print(f"wrote {p}")


def _router_params(raw: str | None, local_prefill: str | None) -> dict[str, dict[str, Any]]:
    """``--router-params`` JSON with ``--local-prefill`` folded in, validated against the
    registry for one policy (params are per plugin type, so any policy will do)."""
    from controlplane.policy.request.registry import RouterConfig, validate_router_config

    params: dict[str, dict[str, Any]] = {}
    if raw:
        loaded = json.loads(raw)
        if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
            raise ValueError("--router-params must be a JSON object of objects")
        params = {str(k): dict(v) for k, v in loaded.items()}
    if local_prefill is not None:
        params["local-prefill"] = {**params.get("local-prefill", {}), "mode": local_prefill}
    validate_router_config(RouterConfig(params=params))
    return params


def _admission_params(raw: str | None) -> dict[str, Any]:
    """``--admission-params`` JSON, validated by the same model the gateway uses."""
    from pydantic import ValidationError

    from controlplane.policy.request.admission import AdmissionParams

    if not raw:
        return {}
    loaded = json.loads(raw)
    if not isinstance(loaded, dict):
        raise ValueError("--admission-params must be a JSON object")
    try:
        AdmissionParams.model_validate(loaded)
    except ValidationError as exc:
        raise ValueError(
            f"--admission-params: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}"
        ) from exc
    return loaded
