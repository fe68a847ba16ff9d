"""The replay report: a rich table on the terminal and the same numbers as JSON.

One row per policy: offered rate, goodput, attainment (overall and per tenant),
TTFT/TPOT p50/p90/p99, rejections, GPU-seconds and goodput per GPU, and the
share of the capacity bound reached — "of bound" against the burst-aware bound at
that rate scale (``capacity.py`` steps 6-8), "of fluid" against the old mean-load
bound; with ``--sweep-rate`` a second table gives each policy's highest sustainable
rate scale against both bounds' scales.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from controlplane.replay.accounting import RunSummary
from controlplane.replay.capacity import Capacity
from controlplane.replay.runner import SweepResult


def _f(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100.0 * v:.1f}%"


def burst_of_bound(r: RunSummary, capacity: Capacity | None) -> tuple[float | None, float | None]:
    """(burst-aware goodput bound at the run's rate scale, goodput / that)."""
    if capacity is None:
        return None, None
    bound = capacity.goodput_bound_rps(r.rate_scale)
    return bound, (r.goodput_rps / bound if bound else None)


def runs_table(runs: Sequence[RunSummary], title: str, capacity: Capacity | None = None) -> Table:
    tenants = sorted({t.tenant for r in runs for t in r.tenants})
    t = Table(title=title, show_lines=False)
    for col in ("policy", "scale", "offered/s", "goodput/s", "attain"):
        t.add_column(col, justify="right" if col != "policy" else "left")
    for name in tenants if len(tenants) > 1 else ():
        t.add_column(name, justify="right")
    for col in (
        "TTFT p50/p90/p99 ms",
        "TPOT p50/p90/p99 ms",
        "rejected",
        "GPU-s",
        "good/GPU",
        "of bound",
        "of fluid",
    ):
        t.add_column(col, justify="right")
    for r in runs:
        per = {x.tenant: x for x in r.tenants}
        row = [
            r.policy,
            f"{r.rate_scale:g}",
            _f(r.offered_rps, 2),
            _f(r.goodput_rps, 2),
            _pct(r.attainment),
        ]
        if len(tenants) > 1:
            row += [_pct(per[n].attainment) if n in per else "-" for n in tenants]
        row += [
            "/".join(_f(r.ttft_ms[k], 0) for k in ("p50", "p90", "p99")),
            "/".join(_f(r.tpot_ms[k], 1) for k in ("p50", "p90", "p99")),
            f"{r.rejected + r.failed}",
            _f(r.gpu_seconds, 0),
            _f(r.goodput_per_gpu, 3),
            _pct(burst_of_bound(r, capacity)[1]),
            _pct(r.of_bound),
        ]
        t.add_row(*row)
    return t  # fmt: skip


def sweep_table(
    sweeps: Sequence[SweepResult], base_rps: float, capacity: Capacity | None = None
) -> Table:
    target = 100 * (sweeps[0].target if sweeps else 0.9)
    t = Table(title=f"rate sweep: highest scale with ≥ {target:.0f}% attainment")
    for col in (
        "policy",
        "max scale",
        "rate/s",
        "goodput/s",
        "attain",
        "bound scale",
        "of bound",
        "fluid scale",
        "of fluid",
        "runs",
    ):
        t.add_column(col, justify="left" if col == "policy" else "right")
    fluid = capacity.fluid_bound_scale(base_rps, sweeps[0].target) if capacity and sweeps else 0
    for s in sweeps:
        t.add_row(
            s.policy,
            f"{s.max_rate_scale:.2f}",
            _f(s.max_rate_scale * base_rps, 2),
            _f(s.goodput_rps, 2),
            _pct(s.attainment),
            _f(s.bound_scale, 2),
            _pct(s.of_bound),
            _f(fluid or None, 2),
            _pct(s.max_rate_scale / fluid if fluid else None),
            str(len(s.points)),
        )
    return t  # fmt: skip


def print_report(
    console: Console,
    runs: Sequence[RunSummary],
    sweeps: Sequence[SweepResult],
    capacity: Capacity | None,
    base_rps: float,
    title: str,
) -> None:
    if runs:
        console.print(runs_table(runs, title, capacity))
    if sweeps:
        console.print(sweep_table(sweeps, base_rps, capacity))
    if capacity is not None:
        console.print(
            f"capacity bound ({capacity.shape}): {capacity.capacity_rps:.2f} req/s "
            f"(prefill {capacity.prefill_rps:.2f}, decode {capacity.decode_rps:.2f}); "
            f"{100 * capacity.feasible_ratio:.1f}% of requests can meet their SLA at all"
        )
        if capacity.burst is not None:
            console.print(
                "burst-aware bound (pooled EDF prefill, fluid decode): "
                f"{_pct(capacity.burst_attainment(1.0))} attainable at 1x, "
                f"≥ 90 % up to scale {capacity.sweep_bound_scale(base_rps):.2f} "
                f"(fluid: {capacity.fluid_bound_scale(base_rps):.2f}; online reference, "
                f"an estimate: {capacity.online_reference_scale():.2f})"
            )


def document(
    *,
    meta: Mapping[str, Any],
    runs: Sequence[RunSummary],
    sweeps: Sequence[SweepResult],
    capacity: Capacity | None,
) -> dict[str, Any]:
    """The ``--json`` document: metadata, capacity, then one entry per policy."""
    policies: dict[str, Any] = {}
    for r in runs:
        bound, of = burst_of_bound(r, capacity)
        policies.setdefault(r.policy, {}).update(
            {**r.to_json(), "burst_bound_rps": bound, "of_burst_bound": of}
        )
    for s in sweeps:
        sw = s.to_json()
        if capacity is not None:
            fluid = capacity.fluid_bound_scale(capacity.base_rps, s.target)
            sw["fluid_bound_rate_scale"] = fluid
            sw["of_fluid_bound"] = s.max_rate_scale / fluid if fluid else None
        policies.setdefault(s.policy, {"policy": s.policy})["sweep"] = sw
    return {
        **meta,
        "capacity": capacity.to_json() if capacity else None,
        "policies": policies,
    }
