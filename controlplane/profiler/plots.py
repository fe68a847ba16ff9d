"""One PNG of the measured curves: TTFT vs prompt length, ITL vs batch per context."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from controlplane.profiler.plan import Result


def plot_profile(results: Iterable[Result], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = list(results)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    pf = sorted((r.tokens, r.latency_ms) for r in rs if r.phase == "prefill")
    a.plot([x for x, _ in pf], [y for _, y in pf], marker="o")
    a.set_xlabel("prompt tokens")
    a.set_ylabel("TTFT (ms)")
    a.set_title("prefill")
    a.grid(True, alpha=0.3)
    for ctx in sorted({r.tokens for r in rs if r.phase == "decode"}):
        pts = sorted((r.batch, r.latency_ms) for r in rs if r.phase == "decode" and r.tokens == ctx)
        b.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=f"context {ctx}")
    b.set_xlabel("concurrent requests (batch)")
    b.set_ylabel("inter-token latency (ms)")
    b.set_title("decode")
    b.grid(True, alpha=0.3)
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
