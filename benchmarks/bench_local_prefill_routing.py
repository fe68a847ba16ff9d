"""What conditional disaggregation costs in ``Router.route``: ``sla`` with the local
prefill rule (``predictive``, the default) against the same policy with ``never``,
interleaved request by request in one process over bench_routing.py's cluster (half
prefill, half decode, random load; the driver's counters move with every request), so
machine load hits both alike.

The TTFT target picks the path: at 2000 ms P/D is never at risk on this cluster (the
rule is one comparison); at 300 ms it almost always is (the rule predicts up to
``max_candidates`` decode workers and may return a local decision).

    .venv/bin/python benchmarks/bench_local_prefill_routing.py [--n 3000]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any


def run(size: int, n: int, ttft_ms: float, seed: int = 0) -> tuple[list[float], list[float], int]:
    from bench_routing import workload  # the sibling script (run as a script: on sys.path)

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000)
    args: Any = ap.parse_args()
    print("| workers | TTFT target | p50 us never / predictive | p99 us never / predictive "
          "| local decisions |")  # fmt: skip
    print("|---|---|---|---|---|")
    for size, ttft in ((8, 2000.0), (64, 2000.0), (1000, 2000.0), (64, 300.0), (1000, 300.0)):
        new, old, local = run(size, args.n, ttft)
        p50 = f"{pct(old, 0.5):.1f} / {pct(new, 0.5):.1f}"
        p99 = f"{pct(old, 0.99):.1f} / {pct(new, 0.99):.1f}"
        print(f"| {size} | {ttft:.0f} ms | {p50} | {p99} | {local} / {args.n + 200} |")


if __name__ == "__main__":
    main()
