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
from typing import Any

SIZES = (8, 64, 1000)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="decisions per (policy, size)")
    ap.add_argument("--churn", default="0,20", help="snapshot updates before each request")
    ap.add_argument("--compare-tree", default="", help="checkout with the 'before' controlplane")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds with --compare-tree")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    churns = [int(c) for c in str(args.churn).split(",")]
    if args.json:
        print(json.dumps(measure(args.n, churns[0])))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


if __name__ == "__main__":
    main()
