"""Assemble an ``Experiment`` from plain options: shared by the CLI and benchmarks.

Reads the trace (window, not yet rate-scaled), the tenant mix (file or one uniform
SLA), assigns tenants with the seed, loads the sim profile and computes the
capacity bound for the cluster shape, so every entry point replays the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.profiles import load_profile
from controlplane.replay.capacity import capacity_bound
from controlplane.replay.cluster import ClusterShape
from controlplane.replay.driver import ReplayConfig
from controlplane.replay.runner import ControlFactory, Experiment
from controlplane.replay.tenants import TenantMix, load_mix, uniform_mix
from controlplane.replay.traces import parse_window, read_trace, window
from workers.sim import EngineConfig


@dataclass(frozen=True, slots=True)
class Options:
    trace: Path
    fmt: str = "auto"
    window: str | None = None
    tenants: Path | None = None
    ttft_ms: float = 2000.0
    itl_ms: float = 50.0
    prefill: int = 0
    decode: int = 0
    workers: int = 0
    profile: str = "h100-llama3.1-8b"
    seed: int = 0
    publish_interval_s: float = 0.25
    admission: bool = True
    kv_transfer_ms: float = 0.0
    kv_transfer_us_per_token: float = 0.0
    """P→D hand-off beyond the profile: fixed + per prompt token (see validate_model)."""
    planner: bool = False
    gpu_budget: int | None = None
    control_interval_s: float = 5.0
    scale_up_delay_s: float = 30.0


def build_experiment(opts: Options, control: ControlFactory | None = None) -> Experiment:
    trace = read_trace(opts.trace, opts.fmt)
    start_s, end_s = parse_window(opts.window)
    if opts.window:
        trace = window(trace, start_s, end_s)
    mix: TenantMix = (
        load_mix(opts.tenants) if opts.tenants else uniform_mix(opts.ttft_ms, opts.itl_ms)
    )
    tenants = mix.assign(len(trace.requests), opts.seed)
    profile = load_profile(opts.profile)
    shape = ClusterShape(opts.prefill, opts.decode, opts.workers)
    engine = EngineConfig(
        kv_transfer_base_s=opts.kv_transfer_ms / 1000.0,
        kv_transfer_s_per_token=opts.kv_transfer_us_per_token / 1e6,
    )
    base = ReplayConfig(
        policy="round_robin",
        shape=shape,
        profile=profile,
        engine=engine,
        publish_interval_s=opts.publish_interval_s,
        admission=opts.admission,
        control_interval_s=opts.control_interval_s,
        gpu_budget=opts.gpu_budget,
        scale_up_delay_s=opts.scale_up_delay_s,
    )
    slas = mix.slas
    cap = capacity_bound(
        trace.requests,
        [slas[t] for t in tenants],
        profile,
        block_tokens=trace.block_tokens,
        prefill=shape.prefill,
        decode=shape.decode,
        workers=shape.workers,
        gpu_budget=opts.gpu_budget if opts.planner else None,
    )
    return Experiment(trace, mix, tenants, base, cap, control if opts.planner else None)


def meta(exp: Experiment, opts: Options, rate_scale: float) -> dict[str, Any]:
    """The JSON document's header: what was replayed, on what, with which seed."""
    tr = exp.trace
    return {
        "trace": {
            "path": str(opts.trace),
            "name": tr.name,
            "requests": len(tr.requests),
            "duration_s": tr.duration_s,
            "mean_rate_rps": tr.mean_rate_rps,
            "window": opts.window,
            "prefix_block_tokens": tr.block_tokens,
        },
        "cluster": {
            "shape": exp.base.shape.label(),
            "prefill": exp.base.shape.prefill,
            "decode": exp.base.shape.decode,
            "workers": exp.base.shape.workers,
            "gpus": exp.base.shape.gpus,
            "profile": opts.profile,
            "planner": opts.planner,
            "gpu_budget": opts.gpu_budget,
            "publish_interval_s": opts.publish_interval_s,
            "admission": opts.admission,
            "kv_transfer_ms": opts.kv_transfer_ms,
            "kv_transfer_us_per_token": opts.kv_transfer_us_per_token,
        },
        "tenants": [{**t.sla.model_dump(mode="json"), "share": t.share} for t in exp.mix.tenants],
        "seed": opts.seed,
        "rate_scale": rate_scale,
    }
