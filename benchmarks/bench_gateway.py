"""Added latency of the gateway vs a direct call to the same sim worker, and gateway
throughput on one core.

Starts one ``slaplane sim-worker`` (role both) and one ``slaplane gateway`` in front
of it (memory store, no key), then for each concurrency streams the same requests
directly and through the gateway, alternating rounds, and reports client-side TTFT
and inter-token gap p50/p99 for both, side by side.

    .venv/bin/python benchmarks/bench_gateway.py latency --conc 1,50,200 --requests 400
    .venv/bin/python benchmarks/bench_gateway.py throughput --conc 200 --seconds 10

``--redis`` runs the gateways on a private redis-server with a tenant whose rpm, tpm
and concurrency limits apply to every request (the path where admission costs store
round trips), authenticated by API key; without it they use the memory store and no key.

``--compare-tree DIR`` (latency mode) starts a second gateway from another checkout's
code (``git archive <rev> controlplane workers | tar -x -C DIR``) on the same worker
and alternates direct / before / after rounds, so old and new are measured under
the same load in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

BIN = Path(sys.executable).with_name("slaplane")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not up")


BENCH_KEY = "sk-bench"


def seed_redis(url: str) -> None:
    """A tenant with every limit set (high enough never to refuse) and its API key."""
    import hashlib

    from controlplane.schemas import RateLimit, TenantSLA
    from controlplane.state import open_store

    async def go() -> None:
        st = open_store(url)
        sla = TenantSLA(tenant="bench", rate_limit=RateLimit(rpm=10**7, tpm=10**9),
                        max_concurrency=10**5)  # fmt: skip
        await st.put_tenant(sla)
        await st.put_api_key(hashlib.sha256(BENCH_KEY.encode()).hexdigest(), "bench")
        await st.close()

    asyncio.run(go())


@contextmanager
def stack(
    sim_args: list[str], gw_cpu: str | None, compare_tree: str = "", redis: bool = False
) -> Iterator[tuple[str, str, str]]:
    """(direct, gateway, before-gateway or "") URLs over one sim worker."""
    sp, gp, bp = free_port(), free_port(), free_port()
    env = {**os.environ, "SLAPLANE_LOG_LEVEL": "WARNING"}
    sim = subprocess.Popen([str(BIN), "sim-worker", "--port", str(sp), *sim_args], env=env)
    procs = [sim]
    store_args = ["--redis-url", "memory://", "--no-require-key"]
    if redis:
        rp = free_port()
        redis_cmd = ["redis-server", "--port", str(rp), "--save", "", "--appendonly", "no"]
        procs.append(subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL))
        time.sleep(0.5)
        seed_redis(f"redis://127.0.0.1:{rp}/0")
        store_args = ["--redis-url", f"redis://127.0.0.1:{rp}/0"]

    def gateway(port: int, genv: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "controlplane.cli", "gateway", "--port", str(port),
               *store_args, "--worker-url", f"http://127.0.0.1:{sp}",
               "--log-level", "WARNING"]  # fmt: skip
        if gw_cpu:
            cmd = ["taskset", "-c", gw_cpu, *cmd]
        procs.append(subprocess.Popen(cmd, env=genv, cwd=genv.get("PYTHONPATH")))

    try:
        wait_http(f"http://127.0.0.1:{sp}/health")  # before the gateways ask it for models
        gateway(gp, env)
        if compare_tree:
            gateway(bp, {**env, "PYTHONPATH": compare_tree})
        wait_http(f"http://127.0.0.1:{gp}/ready")
        if compare_tree:
            wait_http(f"http://127.0.0.1:{bp}/ready")
        before = f"http://127.0.0.1:{bp}" if compare_tree else ""
        yield f"http://127.0.0.1:{sp}", f"http://127.0.0.1:{gp}", before
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=10)


async def one(s: aiohttp.ClientSession, url: str, body: dict[str, object],
              ttfts: list[float], gaps: list[float]) -> int:  # fmt: skip
    t0 = time.perf_counter()
    last = None
    n = 0
    async with s.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200, r.status
        async for line in r.content:
            if line.startswith(b"data: {") and b'"text":""' not in line:
                now = time.perf_counter()
                if last is None:
                    ttfts.append(now - t0)
                else:
                    gaps.append(now - last)
                last = now
                n += 1
    return n


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


async def latency(
    direct: str,
    gw: str,
    conc: int,
    n_req: int,
    max_tokens: int,
    before: str = "",
    key: bool = False,
) -> None:
    targets = [("direct", direct), *([("before", before)] if before else []), ("gateway", gw)]
    res: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n, _ in targets}
    body = {"model": "tiny-llama", "prompt": "bench " * 64, "max_tokens": max_tokens,
            "stream": True, "ignore_eos": True}  # fmt: skip
    conn = aiohttp.TCPConnector(limit=0)
    # the worker ignores it; without --redis the gateways know no keys (a key would be 401)
    auth = {"Authorization": f"Bearer {BENCH_KEY}"} if key else {}
    async with aiohttp.ClientSession(connector=conn, headers=auth) as s:
        rounds = max(1, n_req // conc)
        for i in range(rounds * len(targets)):
            name, url = targets[i % len(targets)]
            ttfts, gaps = res[name]
            await asyncio.gather(*(one(s, url, body, ttfts, gaps) for _ in range(conc)))
    d = res["direct"]

    def cell(xs: list[float], ys: list[float], q: float) -> str:
        a, b = pct(xs, q), pct(ys, q)
        return f"{a:.2f} / {b:.2f} (+{b - a:.2f})"

    for name, _ in targets[1:]:
        g = res[name]
        cells = [cell(d[0], g[0], 0.5), cell(d[0], g[0], 0.99), cell(d[1], g[1], 0.5),
                 cell(d[1], g[1], 0.99)]  # fmt: skip
        label = f"{name} " if before else ""
        print(f"| {label}{conc} | {len(d[0])} | " + " | ".join(cells) + " |", flush=True)


async def throughput(gw: str, conc: int, seconds: float, max_tokens: int) -> None:
    body = {"model": "tiny-llama", "prompt": "tp " * 16, "max_tokens": max_tokens,
            "stream": True, "ignore_eos": True}  # fmt: skip
    done = 0
    tokens = 0
    stop = time.perf_counter() + seconds

    async def loop(s: aiohttp.ClientSession) -> None:
        nonlocal done, tokens
        while time.perf_counter() < stop:
            n = await one(s, gw, body, [], [])  # read counters only after the await
            tokens += n
            done += 1

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await asyncio.gather(*(loop(s) for _ in range(conc)))
    wall = time.perf_counter() - t0
    print(f"| {conc} | {max_tokens} | {done / wall:.0f} | {tokens / wall:.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["latency", "throughput"])
    ap.add_argument("--conc", default="1,50,200")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--time-scale", default="1")
    ap.add_argument("--gateway-cpu", default=None, help="taskset CPU list for the gateway")
    ap.add_argument("--compare-tree", default="", help="checkout with the 'before' gateway")
    ap.add_argument("--redis", action="store_true", help="Redis store + limited tenant")
    a = ap.parse_args()
    sim_args = ["--role", "both", "--time-scale", a.time_scale, "--max-num-seqs", "256"]
    with stack(sim_args, a.gateway_cpu, a.compare_tree, a.redis) as (direct, gw, before):
        if a.mode == "latency":
            print("| streams | requests each | TTFT p50 ms direct / gw (+added) | TTFT p99 | "
                  "ITL p50 | ITL p99 |")  # fmt: skip
            print("|---|---|---|---|---|---|")
            for c in map(int, a.conc.split(",")):
                asyncio.run(latency(direct, gw, c, a.requests, a.max_tokens, before, a.redis))
        else:
            print("| streams | tokens/request | requests/s | streamed tokens/s |")
            print("|---|---|---|---|")
            for c in map(int, a.conc.split(",")):
                asyncio.run(throughput(gw, c, a.seconds, a.max_tokens))


if __name__ == "__main__":
    main()
