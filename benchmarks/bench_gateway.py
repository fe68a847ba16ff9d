"""Added latency of the gateway vs a direct call to the same sim worker, and gateway
throughput on one core, side by side with vllm-router as the baseline.

Starts one ``slaplane sim-worker`` (role both), one ``slaplane gateway`` in front of it
(memory store, no key, its default ``sla`` policy) and, when installed, one
``vllm-router`` in front of the same worker (its default ``cache_aware`` policy). Latency
mode streams the same requests directly, through vllm-router and through the gateway,
alternating rounds, and reports client-side TTFT and inter-token gap p50/p99 of each
and what each proxy adds over direct. Throughput mode runs closed-loop streams against
each in turn. Goal: the gateway adds no more latency than vllm-router.

    .venv/bin/python benchmarks/bench_gateway.py latency --conc 1,50,200 --requests 400
    .venv/bin/python benchmarks/bench_gateway.py throughput --conc 200 --seconds 10

vllm-router (Rust; never in the project's venv) lives in its own venv; ``--vllm-router
auto`` (default) uses ``~/.cache/slaplane/vllm-router-venv/bin/vllm-router`` or one on
PATH, ``none`` skips it:

    python3 -m venv ~/.cache/slaplane/vllm-router-venv
    ~/.cache/slaplane/vllm-router-venv/bin/pip install vllm-router==0.1.17

``--gateway-cpu`` pins the gateway and vllm-router alike with ``taskset``.

``--redis`` runs the gateways on a private redis-server with a tenant whose rpm, tpm
and concurrency limits apply to every request (the path where admission costs store
round trips), authenticated by API key; without it they use the memory store and no key.

``--compare-tree DIR`` (latency mode) starts a second gateway from another checkout's
code (``git archive <rev> controlplane workers | tar -x -C DIR``) on the same worker
and alternates direct / before / after rounds, so old and new are measured under
the same load in one run.

``--record`` also writes ``benchmarks/results/gateway_latency.json`` (latency mode) or
``gateway_throughput.json`` (throughput mode), the results page's data (``make
results``); without it the script only prints. Not with ``--compare-tree``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.append(str(ROOT))

from benchmarks.results_io import Headline, Result, Table, write_result  # noqa: E402

BIN = Path(sys.executable).with_name("slaplane")
VLLM_ROUTER_VENV_BIN = Path.home() / ".cache/slaplane/vllm-router-venv/bin/vllm-router"
SIM_PROFILE = "cpu-tiny"
"""The sim worker's default profile (``slaplane sim-worker --profile``)."""


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


def find_vllm_router(choice: str) -> str:
    """The vllm-router executable for ``--vllm-router`` (``auto``: the cached venv's,
    else one on PATH; ``none``: skip), or "" when there is none."""
    if choice == "none":
        return ""
    if choice != "auto":
        if not Path(choice).is_file():
            sys.exit(f"--vllm-router {choice}: no such file")
        return choice
    if VLLM_ROUTER_VENV_BIN.is_file():
        return str(VLLM_ROUTER_VENV_BIN)
    return shutil.which("vllm-router") or ""


def vllm_router_version(exe: str) -> str:
    """The installed vllm-router's package version (from its own venv's python)."""
    py = Path(exe).with_name("python")
    code = "import importlib.metadata as m; print(m.version('vllm-router'))"
    try:
        out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() or "?"


@dataclass
class Stack:
    """URLs of the one sim worker and the proxies in front of it ("" = not started)."""

    direct: str
    gateway: str
    before: str = ""
    vllm_router: str = ""
    proxies: list[tuple[str, str]] = field(default_factory=list)
    """(label, URL) of every proxy to measure, baseline first."""


@contextmanager
def stack(
    sim_args: list[str],
    gw_cpu: str | None,
    compare_tree: str = "",
    redis: bool = False,
    vllm_router: str = "",
) -> Iterator[Stack]:
    """One sim worker, the gateway, and optionally a 'before' gateway and vllm-router."""
    sp, gp, bp, vp = free_port(), free_port(), free_port(), free_port()
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
    pin = ["taskset", "-c", gw_cpu] if gw_cpu else []

    def gateway(port: int, genv: dict[str, str]) -> None:
        cmd = [*pin, sys.executable, "-m", "controlplane.cli", "gateway", "--port", str(port),
               *store_args, "--worker-url", f"http://127.0.0.1:{sp}",
               "--log-level", "WARNING"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=genv, cwd=genv.get("PYTHONPATH")))

    try:
        wait_http(f"http://127.0.0.1:{sp}/health")  # before the gateways ask it for models
        gateway(gp, env)
        if compare_tree:
            gateway(bp, {**env, "PYTHONPATH": compare_tree})
        if vllm_router:
            cmd = [*pin, vllm_router, "--port", str(vp), "--worker-urls",
                   f"http://127.0.0.1:{sp}", "--log-level", "warning"]  # fmt: skip
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{gp}/ready")
        if compare_tree:
            wait_http(f"http://127.0.0.1:{bp}/ready")
        if vllm_router:  # serves only once the worker passed its health check
            wait_http(f"http://127.0.0.1:{vp}/health", timeout_s=60)
        st = Stack(f"http://127.0.0.1:{sp}", f"http://127.0.0.1:{gp}")
        if vllm_router:
            st.vllm_router = f"http://127.0.0.1:{vp}"
            st.proxies.append(("vllm-router", st.vllm_router))
        if compare_tree:
            st.before = f"http://127.0.0.1:{bp}"
            st.proxies.append(("before", st.before))
        st.proxies.append(("gateway", st.gateway))
        yield st
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


Samples = dict[str, tuple[list[float], list[float]]]
"""Per target label: (TTFTs, inter-token gaps), seconds."""


async def latency(st: Stack, conc: int, n_req: int, max_tokens: int, key: bool = False) -> Samples:
    """Rounds of ``conc`` concurrent streams, alternating direct and every proxy."""
    targets = [("direct", st.direct), *st.proxies]
    res: Samples = {n: ([], []) for n, _ in targets}
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
    return res


def latency_cells(res: Samples, name: str) -> list[str]:
    """TTFT p50, p99, ITL p50, p99 of ``name`` as "ms (+added over direct)"."""
    d, g = res["direct"], res[name]
    out = []
    for i, q in ((0, 0.5), (0, 0.99), (1, 0.5), (1, 0.99)):
        a, b = pct(d[i], q), pct(g[i], q)
        out.append(f"{b:.2f}" if name == "direct" else f"{b:.2f} ({b - a:+.2f})")
    return out


def added_ms(res: Samples, name: str, i: int = 0, q: float = 0.5) -> float:
    """What ``name`` adds over direct: TTFT (``i`` 0) or ITL (1) at quantile ``q``, ms."""
    return pct(res[name][i], q) - pct(res["direct"][i], q)


async def throughput(
    url: str, conc: int, seconds: float, max_tokens: int, key: bool = False
) -> tuple[int, int, float]:
    """(requests, streamed tokens, wall s) of ``conc`` closed-loop streams against ``url``
    for ``seconds``."""
    body = {"model": "tiny-llama", "prompt": "tp " * 16, "max_tokens": max_tokens,
            "stream": True, "ignore_eos": True}  # fmt: skip
    done = 0
    tokens = 0
    stop = time.perf_counter() + seconds

    async def loop(s: aiohttp.ClientSession) -> None:
        nonlocal done, tokens
        while time.perf_counter() < stop:
            n = await one(s, url, body, [], [])  # read counters only after the await
            tokens += n
            done += 1

    t0 = time.perf_counter()
    auth = {"Authorization": f"Bearer {BENCH_KEY}"} if key else {}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, headers=auth) as s:
        await asyncio.gather(*(loop(s) for _ in range(conc)))
    return done, tokens, time.perf_counter() - t0


def _load(la: tuple[float, ...]) -> str:
    return " / ".join(f"{x:.2f}" for x in la)


def _setup(a: argparse.Namespace) -> str:
    store = "Redis store, limited tenant, API key" if a.redis else "memory store, no key"
    pin = f", proxies pinned to CPU {a.gateway_cpu}" if a.gateway_cpu else ""
    return (
        f"one sim worker ({SIM_PROFILE}, time-scale {a.time_scale}), {a.max_tokens} tokens, "
        f"{store}{pin}"
    )


NO_BASELINE = "not measured (no vllm-router)"


def _router_note(exe: str) -> str:
    if exe:
        return (
            f"Baseline: vllm-router {vllm_router_version(exe)} (its default cache_aware "
            "policy) in front of the same worker; gateway policy sla (its default)."
        )
    return (
        "vllm-router was not installed or was skipped, so there is no baseline figure: "
        "install it in its own venv (see `bench_gateway.py --help`) and rerun the command."
    )


def latency_result(
    runs: list[tuple[int, Samples]],
    a: argparse.Namespace,
    exe: str,
    load0: tuple[float, ...],
    load1: tuple[float, ...],
) -> Result:
    conc, res = min(runs, key=lambda r: r[0])  # the headline: the fewest streams
    gw = added_ms(res, "gateway")
    vr = added_ms(res, "vllm-router") if "vllm-router" in res else None
    n = len(res["direct"][0])
    rows = []
    for c, r in runs:
        for name in r:
            label = {"direct": "direct", "gateway": "slaplane gateway"}.get(name, name)
            rows.append([c, label, *latency_cells(r, name)])
    return Result(
        section="gateway_latency",
        title="Gateway added latency",
        question="How much TTFT and inter-token latency does the gateway add over calling "
        "the worker directly, compared with vllm-router in the same place?",
        order=10,
        headline=[
            Headline(
                question="Does the gateway add no more latency than vllm-router?",
                metric=f"TTFT p50 added over direct, {conc} stream{'s' if conc > 1 else ''}",
                slaplane=f"{gw:+.2f} ms",
                baseline=NO_BASELINE if vr is None else f"{vr:+.2f} ms (vllm-router)",
                goal="adds no more than vllm-router",
                met=None if vr is None else gw <= vr,
                conditions=f"{n} streamed requests each, alternating rounds; {_setup(a)}",
            )
        ],
        tables=[
            Table(
                title="",
                columns=[
                    "streams",
                    "via",
                    "TTFT p50 ms (added)",
                    "TTFT p99",
                    "ITL p50",
                    "ITL p99",
                ],
                rows=rows,
            )
        ],
        notes=[
            _router_note(exe) + " Client-side, streamed; with many streams the one worker "
            "is the bottleneck.",
            f"Load average (1/5/15 min) at start {_load(load0)}, at end {_load(load1)} "
            f"({os.cpu_count()} cores shared with other jobs); p99s are upper bounds.",
        ],
    )


def throughput_result(
    runs: list[tuple[int, dict[str, tuple[float, float]]]],
    a: argparse.Namespace,
    exe: str,
    load0: tuple[float, ...],
    load1: tuple[float, ...],
) -> Result:
    conc, res = max(runs, key=lambda r: r[0])  # the headline: the most streams
    vr = res.get("vllm-router")
    rows = []
    for c, r in runs:
        for name, (rps, tps) in r.items():
            label = {"direct": "direct (worker ceiling)", "gateway": "slaplane gateway"}.get(
                name, name
            )
            rows.append([c, label, round(rps), round(tps)])
    return Result(
        section="gateway_throughput",
        title="Gateway throughput",
        question="How many streamed requests per second can the gateway relay"
        + (" on one core?" if a.gateway_cpu and "," not in a.gateway_cpu else "?"),
        order=11,
        headline=[
            Headline(
                question="How many requests/s does the gateway relay?",
                metric=f"streamed requests/s, {conc} closed-loop streams",
                slaplane=f"{res['gateway'][0]:,.0f} req/s",
                baseline=NO_BASELINE if vr is None else f"{vr[0]:,.0f} req/s (vllm-router)",
                goal="-",
                met=None,
                conditions=f"{a.seconds:g} s per target in {a.rounds} alternating rounds; "
                f"{_setup(a)}",
            )
        ],
        tables=[
            Table(
                title="",
                columns=["streams", "via", "requests/s", "streamed tokens/s"],
                rows=rows,
            )
        ],
        notes=[
            _router_note(exe) + " The worker and the client share the machine, so each "
            "figure is a lower bound for the proxy alone.",
            f"Load average (1/5/15 min) at start {_load(load0)}, at end {_load(load1)} "
            f"({os.cpu_count()} cores shared with other jobs).",
        ],
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("mode", choices=["latency", "throughput"])
    ap.add_argument("--conc", default="1,50,200")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0, help="per target (throughput)")
    ap.add_argument(
        "--rounds", type=int, default=2, help="throughput: alternating rounds of seconds/rounds"
    )
    ap.add_argument("--time-scale", default="1")
    ap.add_argument("--gateway-cpu", default=None, help="taskset CPU list for the proxies")
    ap.add_argument("--compare-tree", default="", help="checkout with the 'before' gateway")
    ap.add_argument("--redis", action="store_true", help="Redis store + limited tenant")
    ap.add_argument(
        "--vllm-router",
        default="auto",
        help="vllm-router executable for the baseline: auto (the cached venv's or PATH's, "
        "skipped when absent), none, or a path",
    )
    ap.add_argument(
        "--record",
        action="store_true",
        help="also write benchmarks/results/gateway_<mode>.json (the results page's data; "
        "default: print only)",
    )
    a = ap.parse_args()
    if a.record and a.compare_tree:
        ap.error("--record records the working tree alone; drop --compare-tree")
    exe = find_vllm_router(a.vllm_router)
    if not exe:
        print("vllm-router not found: measuring without the baseline", file=sys.stderr)
    sim_args = ["--role", "both", "--time-scale", a.time_scale, "--max-num-seqs", "256"]
    concs = [int(c) for c in a.conc.split(",")]
    load0 = os.getloadavg()
    with stack(sim_args, a.gateway_cpu, a.compare_tree, a.redis, exe) as st:
        if a.mode == "latency":
            lat: list[tuple[int, Samples]] = []
            print("| streams | via | requests each | TTFT p50 ms (+added) | TTFT p99 | "
                  "ITL p50 | ITL p99 |")  # fmt: skip
            print("|---|---|---|---|---|---|---|")
            for c in concs:
                res = asyncio.run(latency(st, c, a.requests, a.max_tokens, a.redis))
                lat.append((c, res))
                for name in res:
                    cells = " | ".join(latency_cells(res, name))
                    print(f"| {c} | {name} | {len(res[name][0])} | {cells} |", flush=True)
        else:
            tput: list[tuple[int, dict[str, tuple[float, float]]]] = []
            print("| streams | via | tokens/request | requests/s | streamed tokens/s |")
            print("|---|---|---|---|---|")
            targets = [("direct", st.direct), *st.proxies]
            for c in concs:
                sums = {name: [0, 0, 0.0] for name, _ in targets}
                for k in range(a.rounds):  # alternate, so load drift hits every target
                    for name, url in targets if k % 2 == 0 else targets[::-1]:
                        got = asyncio.run(
                            throughput(url, c, a.seconds / a.rounds, a.max_tokens, a.redis)
                        )
                        for m, v in enumerate(got):
                            sums[name][m] += v
                rates = {n: (v[0] / v[2], v[1] / v[2]) for n, v in sums.items()}
                for name, (rps, tps) in rates.items():
                    print(f"| {c} | {name} | {a.max_tokens} | {rps:.0f} | {tps:.0f} |",
                          flush=True)  # fmt: skip
                tput.append((c, rates))
    load1 = os.getloadavg()
    if a.record:
        if a.mode == "latency":
            path = write_result(latency_result(lat, a, exe, load0, load1))
        else:
            path = write_result(throughput_result(tput, a, exe, load0, load1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
