"""PNG figures for a replay report (matplotlib, Agg backend: no display needed).

* ``attainment_vs_rate.png``: attainment per policy against the rate scale (the sweep's
  tested points), with the 90 % line and the capacity bound's scale;
* ``ttft_cdf.png`` / ``tpot_cdf.png``: latency CDFs of completed requests per policy;
* ``tenant_attainment.png``: per-tenant attainment bars per policy, objective marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from controlplane.replay.accounting import OK, Outcome, RunSummary
from controlplane.replay.runner import SweepResult


def _plt() -> Any:
    """pyplot on the Agg backend, imported on first use (matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_attainment_vs_rate(
    sweeps: Sequence[SweepResult], runs: Sequence[RunSummary], out: Path
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    bound = None
    for s in sweeps:
        xs = [p[0] for p in s.points]
        ax.plot(xs, [100 * p[1] for p in s.points], marker="o", label=s.policy)
        bound = s.bound_scale or bound
    if not sweeps:
        for r in runs:
            ax.plot([r.rate_scale], [100 * r.attainment], marker="o", linestyle="", label=r.policy)
    ax.axhline(90, color="grey", linestyle="--", linewidth=1, label="90 % target")
    if bound:
        ax.axvline(bound, color="black", linestyle=":", linewidth=1, label="capacity bound")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rate scale (x trace rate)")
    ax.set_ylabel("SLA attainment (%)")
    ax.set_ylim(0, 101)
    ax.grid(True, alpha=0.3)
    ax.legend()
    path = out / "attainment_vs_rate.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path  # fmt: skip


def plot_cdfs(outcomes: Mapping[str, Sequence[Outcome]], out: Path) -> list[Path]:
    plt = _plt()
    paths: list[Path] = []
    for metric, label in (("ttft_s", "TTFT (ms)"), ("tpot_s", "TPOT (ms)")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for policy, outs in outcomes.items():
            vals = sorted(
                1000.0 * v for o in outs if o.status == OK and (v := getattr(o, metric)) is not None
            )
            if not vals:
                continue
            n = len(vals)
            ax.plot(vals, [(k + 1) / n for k in range(n)], label=policy)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of completed requests")
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = out / f"{metric.removesuffix('_s')}_cdf.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_tenants(runs: Sequence[RunSummary], out: Path) -> Path:
    plt = _plt()
    tenants = sorted({t.tenant for r in runs for t in r.tenants})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / max(1, len(runs))
    for k, r in enumerate(runs):
        per = {t.tenant: t for t in r.tenants}
        xs = [i + k * width for i in range(len(tenants))]
        ax.bar(
            xs, [100 * per[t].attainment if t in per else 0 for t in tenants], width, label=r.policy
        )
    objectives = {t.tenant: t.objective for r in runs for t in r.tenants}
    for i, t in enumerate(tenants):
        y = 100 * objectives.get(t, 0.0)
        ax.hlines(
            y, i - width / 2, i + 0.8 - width / 2, colors="black", linestyles="--", linewidth=1
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tenants))], tenants)
    ax.set_ylabel("SLA attainment (%) — dashed: objective")
    ax.set_ylim(0, 101)
    ax.legend()
    path = out / "tenant_attainment.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path  # fmt: skip


def write_plots(
    out: Path,
    runs: Sequence[RunSummary],
    outcomes: Mapping[str, Sequence[Outcome]],
    sweeps: Sequence[SweepResult],
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_attainment_vs_rate(sweeps, runs, out)]
    paths += plot_cdfs(outcomes, out)
    paths.append(plot_tenants(runs, out))
    return paths
