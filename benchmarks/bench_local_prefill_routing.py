"""What conditional disaggregation costs in ``Router.route``: ``sla`` with the local
prefill rule (``predictive``, the default) against the same policy with ``never``,
interleaved request by request in one process over bench_routing.py's cluster (half
prefill, half decode, random load; the driver's counters move with every request), so
machine load hits both alike.

The TTFT target picks the path: at 2000 ms P/D is never at risk on this cluster (the
rule is one comparison); at 300 ms it almost always is (the rule predicts up to
``max_candidates`` decode workers and may return a local decision).

    .venv/bin/python benchmarks/bench_local_prefill_routing.py [--n 3000] [--record]

``--record`` also writes ``benchmarks/results/local_prefill_routing.json`` (section
``local_prefill_routing`` of ``benchmarks/RESULTS.md``, rendered by ``make results``);
without it the script only prints. No goal of its own: the rule's cost counts against
``Router.route``'s (see ``bench_routing.py``); the headline is 64 workers at the tight
target, where the rule does the most work.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.append(str(ROOT))

from benchmarks.results_io import Headline, Result, Table, write_result  # noqa: E402

CASES = ((8, 2000.0), (64, 2000.0), (1000, 2000.0), (64, 300.0), (1000, 300.0))
"""(workers, TTFT target ms); the headline is (64, 300)."""
HEADLINE_CASE = (64, 300.0)


def run(size: int, n: int, ttft_ms: float, seed: int = 0) -> tuple[list[float], list[float], int]:
    from benchmarks.bench_routing import workload
    from controlplane.policy.request.registry import RouterConfig, build_router
    from controlplane.policy.types import ClusterView, RouteRequest, build_pools

    rng = random.Random(seed)
    now_s = time.time()
    hashes, snap = workload(rng, now_s)

    ws = {f"w{i}": snap(i) for i in range(size)}
    pools = build_pools(ws)
    new = build_router(RouterConfig(policy="sla"))
    old = build_router(RouterConfig(policy="sla", params={"local-prefill": {"mode": "never"}}))
    counters: dict[int, tuple[dict[str, int], dict[str, int]]] = {
        id(r): ({w: rng.randint(0, 4) for w in ws}, {w: rng.randint(0, 2000) for w in ws})
        for r in (new, old)
    }
    t_new: list[float] = []
    t_old: list[float] = []
    local = 0
    for i in range(n + 200):
        h = hashes[i % len(hashes)]
        req = RouteRequest(
            f"r{i}", "t", "m", len(h) * 16 + 8, 128, ttft_target_ms=ttft_ms, block_hashes=h
        )
        for r in (new, old) if i % 2 else (old, new):
            inflight, pending = counters[id(r)]
            view = ClusterView(
                ws, inflight=inflight, pending_prefill_tokens=pending, pools=pools, version=1
            )
            t0 = time.perf_counter()
            d = r.route(req, view, now_s)
            dt = time.perf_counter() - t0
            assert d is not None
            r.observe(req, d, view, now_s)
            local += r is new and d.mode == "local"
            for w in d.workers():
                inflight[w] = (inflight[w] + 1) % 6
                pending[w] = (pending[w] + 700) % 3000
            if i >= 200:
                (t_new if r is new else t_old).append(dt * 1e6)
    return t_new, t_old, local


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


Row = tuple[int, float, list[float], list[float], int]
"""(workers, TTFT target ms, predictive times us, never times us, local decisions)."""


def result(rows: list[Row], n: int, load0: tuple[float, ...], load1: tuple[float, ...]) -> Result:
    def p50_p99(xs: list[float]) -> str:
        return f"{pct(xs, 0.5):.0f} / {pct(xs, 0.99):.0f}"

    head = []
    for size, ttft, new, old, _ in rows:
        if (size, ttft) == HEADLINE_CASE:
            head.append(
                Headline(
                    question="What does conditional disaggregation add to a routing decision?",
                    metric=f"Router.route p50 / p99, {size} workers, TTFT target {ttft:.0f} ms",
                    slaplane=f"{p50_p99(new)} µs (local prefill predictive)",
                    baseline=f"{p50_p99(old)} µs (never: always P/D)",
                    goal="-",
                    met=None,
                    conditions=f"sla policy, interleaved request by request, {n:,} decisions "
                    "each, one process",
                )
            )
    table = Table(
        title="",
        columns=[
            "workers",
            "TTFT target",
            "never p50 / p99 µs",
            "predictive p50 / p99 µs",
            "local decisions",
        ],
        rows=[
            [size, f"{ttft:.0f} ms", p50_p99(old), p50_p99(new), f"{local} / {n + 200}"]
            for size, ttft, new, old, local in rows
        ],
    )
    return Result(
        section="local_prefill_routing",
        title="Cost of the local-prefill rule in routing",
        question="What does the local-prefill rule (conditional disaggregation, `predictive`) "
        "add to `Router.route` over plain P/D routing?",
        order=13,
        headline=head,
        tables=[table],
        notes=[
            "At 2000 ms P/D is never at risk on this cluster (the rule is one comparison); at "
            "300 ms it often is (the rule predicts up to `max_candidates` decode workers).",
            f"Load average (1/5/15 min) at start {_load(load0)}, at end {_load(load1)} "
            f"({os.cpu_count()} cores shared with other jobs); the two variants alternate "
            "request by request, so load hits them alike.",
        ],
    )


def _load(la: tuple[float, ...]) -> str:
    return " / ".join(f"{x:.2f}" for x in la)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument(
        "--record",
        action="store_true",
        help="also write benchmarks/results/local_prefill_routing.json (the results page's "
        "data; default: print only)",
    )
    args: Any = ap.parse_args()
    load0 = os.getloadavg()
    print("| workers | TTFT target | p50 us never / predictive | p99 us never / predictive "
          "| local decisions |")  # fmt: skip
    print("|---|---|---|---|---|")
    rows: list[Row] = []
    for size, ttft in CASES:
        new, old, local = run(size, args.n, ttft)
        rows.append((size, ttft, new, old, local))
        p50 = f"{pct(old, 0.5):.1f} / {pct(new, 0.5):.1f}"
        p99 = f"{pct(old, 0.99):.1f} / {pct(new, 0.99):.1f}"
        print(f"| {size} | {ttft:.0f} ms | {p50} | {p99} | {local} / {args.n + 200} |")
    if args.record:
        print(f"wrote {write_result(result(rows, args.n, load0, os.getloadavg()))}")


if __name__ == "__main__":
    main()
