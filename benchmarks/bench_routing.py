"""Routing decision time per request for 8, 64 and 1,000 workers, every policy.

Times ``Router.route`` (filters, scorers, pick, prediction of the chosen pair) over a
P/D cluster (half prefill, half decode) with varied load, as the gateway calls it:
the driver's in-flight and pending-token counters change with every request, and
``--churn`` workers get a new snapshot (and the view a new version) before each
request, as telemetry does live (1,000 workers publishing at 10 Hz against 500
requests/s is churn 20). Goal (issue 4): p99 < 100 us at 64 workers, < 1 ms at 1,000.

    .venv/bin/python benchmarks/bench_routing.py [--n 2000] [--churn 0,20]
    .venv/bin/python benchmarks/bench_routing.py --compare-tree /tmp/old-checkout

``--compare-tree`` runs the same measurement against another checkout's
``controlplane`` (e.g. ``git archive <rev> controlplane | tar -x -C DIR``) in
alternating subprocess rounds and prints both side by side.

``--record`` also writes ``benchmarks/results/routing_cost.json`` (section
``routing_cost`` of ``benchmarks/RESULTS.md``, rendered by ``make results``); without it
the script only prints. The headline is the ``sla`` policy's p99 at the worst measured
churn. Not with ``--compare-tree`` (the page records the working tree alone).

    .venv/bin/python benchmarks/bench_routing.py --n 2000 --churn 0,3,20 --record
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable; appended,
    sys.path.append(str(ROOT))  # so --compare-tree's PYTHONPATH still wins for controlplane

from benchmarks.results_io import Headline, Result, Table, write_result  # noqa: E402

SIZES = (8, 64, 1000)
GOALS_P99_US = {64: 100.0, 1000: 1000.0}
"""Issue 4: ``Router.route`` p99 < 100 us at 64 workers, < 1 ms at 1,000."""
HEADLINE_POLICY = "sla"


def workload(rng: random.Random, now_s: float) -> tuple[list[Any], Callable[[int], Any]]:
    """The benchmark cluster (also ``bench_local_prefill_routing.py``'s): 64 prompts'
    block hashes sharing a system prompt, and a maker of worker ``i``'s snapshot (even =
    prefill, odd = decode, random load). Imports lazily: ``--compare-tree`` runs this
    file against another checkout's ``controlplane``."""
    from controlplane.policy.request.prefix import block_hashes_from_text
    from controlplane.schemas import WorkerSnapshot

    prompts = [("system prompt " * 40) + f"user {i} " * rng.randint(5, 200) for i in range(64)]
    hashes = [block_hashes_from_text(p) for p in prompts]

    def snap(i: int) -> WorkerSnapshot:
        return WorkerSnapshot(
            "c", f"w{i}", "prefill" if i % 2 == 0 else "decode", "m",
            url=f"http://10.0.{i // 250}.{i % 250}:8000",
            kv_usage=rng.random() * 0.9, running=rng.randint(0, 64), waiting=rng.randint(0, 8),
            waiting_tokens=rng.randint(0, 8000), ts_ms=int(now_s * 1000),
        )  # fmt: skip

    return hashes, snap


def measure(n_decisions: int, churn: int) -> dict[str, list[float]]:
    from controlplane.policy.request.registry import POLICIES, RouterConfig, build_router
    from controlplane.policy.types import ClusterView, RouteRequest, build_pools

    versioned = "version" in ClusterView.__dataclass_fields__
    rng = random.Random(0)
    now_s = time.time()
    hashes, snap = workload(rng, now_s)

    out: dict[str, list[float]] = {}
    for size in SIZES:
        ws = {f"w{i}": snap(i) for i in range(size)}
        pools = build_pools(ws)
        for policy in sorted(POLICIES):
            router = build_router(RouterConfig(policy=policy))
            inflight = {w: rng.randint(0, 4) for w in ws}
            pending = {w: rng.randint(0, 2000) for w in ws}
            version = 0
            times: list[float] = []
            for i in range(n_decisions + 200):
                for _ in range(churn):
                    k = rng.randrange(size)
                    ws[f"w{k}"] = replace(ws[f"w{k}"], running=rng.randint(0, 64))
                version += 1 if churn else 0
                kw: dict[str, Any] = {"version": version} if versioned else {}
                view = ClusterView(
                    ws, inflight=inflight, pending_prefill_tokens=pending, pools=pools, **kw
                )
                h = hashes[i % len(hashes)]
                req = RouteRequest(f"r{i}", "t", "m", len(h) * 16 + 8, 128, block_hashes=h)
                t0 = time.perf_counter()
                d = router.route(req, view, now_s)
                dt = time.perf_counter() - t0
                assert d is not None
                router.observe(req, d, view, now_s)
                for w in d.workers():  # the gateway's counters move with every request
                    inflight[w] = (inflight[w] + 1) % 6
                    pending[w] = (pending[w] + 700) % 3000
                if i >= 200:  # warm-up
                    times.append(dt * 1e6)
            out[f"{policy}|{size}"] = times
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _child(tree: str, n: int, churn: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": tree}
    cmd = [sys.executable, __file__, "--json", "--n", str(n), "--churn", str(churn)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=tree)
    data: dict[str, list[float]] = json.loads(res.stdout)
    return data


def result(
    runs: dict[int, dict[str, list[float]]],
    n: int,
    load0: tuple[float, ...],
    load1: tuple[float, ...],
) -> Result:
    """The ``routing_cost`` section: ``runs[churn]["policy|size"]`` = decision times, us."""
    churns = sorted(runs)
    headline = []
    for size, goal in GOALS_P99_US.items():
        key = f"{HEADLINE_POLICY}|{size}"
        if not all(key in runs[c] for c in churns):
            continue
        p99, churn = max((pct(runs[c][key], 0.99), c) for c in churns)
        headline.append(
            Headline(
                question=f"Is routing fast enough at {size:,} workers?",
                metric=f"Router.route p99, {size:,} workers",
                slaplane=f"{p99:.0f} µs",
                baseline="-",
                goal=f"p99 < {goal:,.0f} µs",
                met=p99 < goal,
                conditions=f"{HEADLINE_POLICY} policy, worst of churn "
                f"{', '.join(map(str, churns))} (at {churn}), {n:,} decisions per policy and size",
            )
        )
    top = churns[-1]
    policies = sorted({k.split("|")[0] for r in runs.values() for k in r})
    # the headline policy at every churn, the others at the highest (keeps the page short)
    shown = [(HEADLINE_POLICY, c) for c in churns] + [
        (p, top) for p in policies if p != HEADLINE_POLICY
    ]
    rows = []
    for policy, c in shown:
        cells = [
            f"{pct(t, 0.5):.0f} / {pct(t, 0.99):.0f}"
            if (t := runs[c].get(f"{policy}|{size}"))
            else "-"
            for size in SIZES
        ]
        rows.append([policy, c, *cells])
    return Result(
        section="routing_cost",
        title="Routing decision time",
        question="How long does the gateway's routing decision (`Router.route`: filters, "
        "scorers, pick, prediction of the chosen pair) take per request as the cluster grows?",
        order=12,
        headline=headline,
        tables=[
            Table(
                title="",
                columns=[
                    "policy",
                    "churn",
                    *(f"{s:,} workers p50 / p99 µs" for s in SIZES),
                ],
                rows=rows,
            )
        ],
        notes=[
            "Half prefill, half decode workers; churn = workers with a new snapshot before "
            "each request (64 workers at 10 Hz vs 200 req/s is ~3, 1,000 vs 500 req/s is 20).",
            f"Load average (1/5/15 min) at start {_load(load0)}, at end {_load(load1)} "
            f"({os.cpu_count()} cores shared with other jobs); p99 includes preemption.",
        ],
    )


def _load(la: tuple[float, ...]) -> str:
    return " / ".join(f"{x:.2f}" for x in la)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=2000, help="decisions per (policy, size)")
    ap.add_argument("--churn", default="0,20", help="snapshot updates before each request")
    ap.add_argument("--compare-tree", default="", help="checkout with the 'before' controlplane")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds with --compare-tree")
    ap.add_argument(
        "--record",
        action="store_true",
        help="also write benchmarks/results/routing_cost.json (the results page's data; "
        "default: print only)",
    )
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    churns = [int(c) for c in str(args.churn).split(",")]
    if args.json:
        print(json.dumps(measure(args.n, churns[0])))
        return
    if args.record and args.compare_tree:
        ap.error("--record records the working tree alone; drop --compare-tree")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    load0 = os.getloadavg()
    recorded: dict[int, dict[str, list[float]]] = {}
    for churn in churns:
        runs: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
        for _ in range(args.rounds if args.compare_tree else 1):
            trees = (
                [("before", args.compare_tree), ("after", here)]
                if args.compare_tree
                else [("after", here)]
            )
            for label, tree in trees:
                for k, v in _child(tree, args.n, churn).items():
                    runs[label].setdefault(k, []).extend(v)
        recorded[churn] = runs["after"]
        print(f"\nchurn {churn} (snapshot updates per request)\n")
        if args.compare_tree:
            print("| policy | workers | p50 us before / after | p99 us before / after |")
            print("|---|---|---|---|")
        else:
            print("| policy | workers | p50 us | p99 us | max us |")
            print("|---|---|---|---|---|")
        for key, after in runs["after"].items():
            policy, size = key.split("|")
            if args.compare_tree:
                b = runs["before"][key]
                print(f"| {policy} | {size} | {pct(b, 0.5):.1f} / {pct(after, 0.5):.1f} "
                      f"| {pct(b, 0.99):.1f} / {pct(after, 0.99):.1f} |")  # fmt: skip
            else:
                print(f"| {policy} | {size} | {pct(after, 0.5):.1f} | {pct(after, 0.99):.1f} "
                      f"| {max(after):.1f} |")  # fmt: skip
    if args.record:
        print(f"wrote {write_result(result(recorded, args.n, load0, os.getloadavg()))}")


if __name__ == "__main__":
    main()
