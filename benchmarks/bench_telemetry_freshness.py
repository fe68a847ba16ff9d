"""Telemetry freshness: time from a worker's state change to Redis reflecting it.

Setup (all on this machine):
* one page-server process standing in for N vLLM workers (one port each), serving
  the real vLLM 0.32.0 idle page (shared/fixtures/vllm-0.32.0/metrics-idle.txt)
  and a "queueing" variant of it (running 3, waiting 5, kv 0.032); each worker
  flips between the two at random times (every 1-2 s) and logs the flip time;
* N agent *processes* (``python -m workers.agent``, the same code as
  ``slaplane agent``), one per worker, publishing to a private redis-server;
* this process: after the run, reads the telemetry stream and, for every flip,
  finds the first snapshot of that worker scraped after the flip showing the new
  state. Freshness = Redis stream entry id (Redis server clock, ms) - flip time.

Agent CPU per scrape = increase of the agents' ``process_cpu_seconds_total`` /
increase of ``slaplane_agent_scrapes_total``, read from each agent's metrics port
before and after the measured window (start-up is excluded).

    .venv/bin/python benchmarks/bench_telemetry_freshness.py --workers 32 \
        --intervals 100,250 --duration-s 30 --record

``--record`` also writes ``benchmarks/results/telemetry_freshness.json`` (section
``telemetry_freshness`` of ``benchmarks/RESULTS.md``, rendered by ``make results``);
without it the script only prints. Goal (README: "within a few hundred milliseconds"):
p99 < 300 ms at a 250 ms scrape interval, judged on the worst 250 ms run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.append(str(ROOT))

from benchmarks.results_io import Headline, Result, Table, write_result  # noqa: E402

IDLE_PAGE = ROOT.parent / "shared/fixtures/vllm-0.32.0/metrics-idle.txt"
GOAL_INTERVAL_MS = 250
GOAL_P99_MS = 300.0
COLUMNS = ["interval", "workers", "flips matched", "p50", "p90", "p99", "max", "failed scrapes",
           "agent CPU ms/scrape", "agents' cores", "load 1m start, end"]  # fmt: skip


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(int(s.getsockname()[1]))
    for s in socks:
        s.close()
    return ports


class PageTemplate:
    """The real vLLM 0.32.0 idle page with its scheduler gauges, token counters and
    TTFT/ITL histograms re-rendered from a load step ``k``: while a worker is busy
    ``k`` grows at every request, so every busy scrape sees new counter values and new
    histogram buckets (a full re-parse for the agent, as with a loaded vLLM); while it
    is idle the page does not change (as with an idle vLLM)."""

    _LINE = re.compile(r"^([^\s{]+)(\{[^}]*\})? (\S+)$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.slots: list[tuple[int, str, str, float]] = []  # (line, prefix, kind, le)
        for n, line in enumerate(self.lines):
            m = self._LINE.match(line)
            if not m:
                continue
            name, labels = m.group(1), m.group(2) or ""
            le_m = re.search(r'le="([^"]+)"', labels)
            le = float(le_m.group(1)) if le_m else math.inf
            kind = {
                "vllm:num_requests_running": "running",
                "vllm:num_requests_waiting": "waiting",
                "vllm:kv_cache_usage_perc": "kv",
                "vllm:prompt_tokens_total": "prompt",
                "vllm:prefix_cache_queries_total": "prompt",
                "vllm:generation_tokens_total": "gen",
                "vllm:time_to_first_token_seconds_bucket": "ttft",
                "vllm:time_to_first_token_seconds_count": "ttft",
                "vllm:inter_token_latency_seconds_bucket": "itl",
                "vllm:inter_token_latency_seconds_count": "itl",
            }.get(name)
            if name == "vllm:request_success_total" and 'finished_reason="length"' in labels:
                kind = "finished"
            if kind:
                self.slots.append((n, f"{name}{labels} ", kind, le))

    def render(self, k: int, busy: bool) -> bytes:
        lines = list(self.lines)
        for n, prefix, kind, le in self.slots:
            v = {
                "running": 3.0 if busy else 0.0,
                "waiting": 5.0 if busy else 0.0,
                "kv": 0.032 if busy else 0.0,
                "prompt": 2000.0 * k,
                "gen": 30.0 * k,
                "finished": float(k),
                # k requests: TTFT spread up to 400 ms; 30 k tokens: ITL up to 50 ms
                "ttft": float(round(k * min(1.0, le / 0.4))),
                "itl": float(round(30 * k * min(1.0, le / 0.05))),
            }[kind]
            lines[n] = f"{prefix}{v}"
        return ("\n".join(lines) + "\n").encode()


# --- page server (child process) -------------------------------------------------
async def serve_pages(ports: list[int], control_port: int) -> None:
    tpl = PageTemplate(IDLE_PAGE.read_text())
    state = [0] * len(ports)  # waiting per worker
    step = [0] * len(ports)  # load step per worker (grows while busy)
    idle_pages = [tpl.render(0, False)] * len(ports)
    log: list[tuple[int, float, int]] = []
    flipping = asyncio.Event()
    stop = asyncio.Event()

    def handler(i: int) -> Any:
        async def h(_: web.Request) -> web.Response:
            if state[i]:
                step[i] += 1
                body = tpl.render(step[i], True)
            else:
                body = idle_pages[i]
            return web.Response(body=body, content_type="text/plain")

        return h

    async def flipper(i: int) -> None:
        rng = random.Random(i)
        await flipping.wait()
        await asyncio.sleep(rng.uniform(0, 1.0))
        while not stop.is_set():
            state[i] = 0 if state[i] else 5
            if not state[i]:
                idle_pages[i] = tpl.render(step[i], False)
            log.append((i, time.time(), state[i]))
            await asyncio.sleep(rng.uniform(1.0, 2.0))

    async def start(_: web.Request) -> web.Response:
        flipping.set()
        return web.json_response({"ok": True})

    async def finish(_: web.Request) -> web.Response:
        stop.set()
        return web.json_response(log)

    runners = []
    for i, p in enumerate(ports):
        app = web.Application()
        app.router.add_get("/metrics", handler(i))
        r = web.AppRunner(app, access_log=None)
        await r.setup()
        await web.TCPSite(r, "127.0.0.1", p).start()
        runners.append(r)
    ctl = web.Application()
    ctl.router.add_post("/start", start)
    ctl.router.add_post("/stop", finish)
    r = web.AppRunner(ctl, access_log=None)
    await r.setup()
    await web.TCPSite(r, "127.0.0.1", control_port).start()
    tasks = [asyncio.create_task(flipper(i)) for i in range(len(ports))]
    print("ready", flush=True)
    await asyncio.Event().wait()
    del tasks


# --- measurement (parent) ----------------------------------------------------------
def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_ports(1)[0]
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server not installed")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp), "--logfile", str(tmp / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


async def follow(
    r: Any, stream: str, out: list[tuple[int, str, int, int, bool]], done: asyncio.Event
) -> None:
    """Tail the telemetry stream (XREAD BLOCK) until ``done``, so nothing is lost to the
    MAXLEN cap; keeps (entry id ms, worker, waiting, ts_ms, up) per snapshot. Stopped by
    an event, not cancel(): redis-py may turn a cancelled read into a ConnectionError."""
    last = "$"
    while not done.is_set():
        try:
            resp = await r.xread({stream: last}, count=5000, block=200)
        except (ConnectionError, OSError, RedisError) as exc:  # keep following
            print(f"follower: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.1)
            continue
        for _, entries in resp or []:
            for eid, f in entries:
                last = eid
                out.append(
                    (int(eid.split("-")[0]), f["worker"], int(f["waiting"]), int(f["ts_ms"]),
                     f["up"] == "1")
                )  # fmt: skip


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def agent_counters(http: aiohttp.ClientSession, port: int) -> tuple[float, float, float]:
    """(process CPU seconds, scrapes, failed scrapes) of one agent from its metrics port."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    cpu = scrapes = failed = 0.0
    for line in text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            cpu = float(line.split()[-1])
        elif line.startswith("slaplane_agent_scrapes_total{"):
            scrapes += float(line.split()[-1])
            if 'result="ok"' not in line:
                failed += float(line.split()[-1])
    return cpu, scrapes, failed


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def spawn_agent(
    i: int,
    page_port: int,
    metrics_port: int,
    cluster: str,
    interval_ms: int,
    redis_url: str,
    env: dict[str, str],
) -> subprocess.Popen[bytes]:
    """One ``python -m workers.agent`` process for worker ``w{i}``."""
    return subprocess.Popen(
        [sys.executable, "-m", "workers.agent", "--worker-url", f"http://127.0.0.1:{page_port}",
         "--worker-id", f"w{i:02d}", "--role", "decode", "--cluster", cluster,
         "--redis-url", redis_url, "--interval-ms", str(interval_ms),
         "--metrics-port", str(metrics_port)],
        env=env, cwd=ROOT,
    )  # fmt: skip


def spawn(
    page_ports: list[int],
    metric_ports: list[int],
    ctl: int,
    cluster: str,
    interval_ms: int,
    redis_url: str,
    env: dict[str, str],
) -> tuple[subprocess.Popen[bytes], list[subprocess.Popen[bytes]]]:
    """Start the page server (waits until it listens) and one agent process per worker."""
    pages = subprocess.Popen(
        [sys.executable, __file__, "--serve-pages", ",".join(map(str, page_ports)),
         "--control-port", str(ctl)],
        stdout=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert pages.stdout is not None
    pages.stdout.readline()
    agents = [
        spawn_agent(i, p, m, cluster, interval_ms, redis_url, env)
        for i, (p, m) in enumerate(zip(page_ports, metric_ports, strict=True))
    ]
    return pages, agents


async def run_one(n: int, interval_ms: int, duration_s: float, redis_url: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from controlplane.state import keys

    cluster = f"bench{interval_ms}-{os.getpid()}-{time.monotonic_ns()}"  # fresh keys per run
    ports = free_ports(2 * n + 1)
    page_ports, metric_ports, ctl = ports[:n], ports[n : 2 * n], ports[-1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLAPLANE_LOG_LEVEL": "WARNING"}
    pages, agents = spawn(page_ports, metric_ports, ctl, cluster, interval_ms, redis_url, env)
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for i, a in enumerate(agents):
                if a.poll() is not None:  # e.g. its metrics port was taken meanwhile
                    metric_ports[i] = free_ports(1)[0]
                    agents[i] = spawn_agent(
                        i, page_ports[i], metric_ports[i], cluster, interval_ms, redis_url, env
                    )
            if await r.zcard(keys.workers_zset(cluster)) == n and all(
                a.poll() is None for a in agents
            ):
                break
            await asyncio.sleep(0.5)
        else:
            raise RuntimeError("agents did not all publish within 120 s")
        await asyncio.sleep(5.0)  # settle after the start-up CPU burst of N processes
        rows: list[tuple[int, str, int, int, bool]] = []
        done = asyncio.Event()
        follower = asyncio.create_task(follow(r, keys.telemetry_stream(cluster), rows, done))
        async with aiohttp.ClientSession() as http:
            before = [await agent_counters(http, m) for m in metric_ports]
            pages_cpu0 = proc_cpu_s(pages.pid)
            load0 = os.getloadavg()[0]
            t0 = time.monotonic()
            async with http.post(f"http://127.0.0.1:{ctl}/start") as resp:
                await resp.read()
            await asyncio.sleep(duration_s)
            async with http.post(f"http://127.0.0.1:{ctl}/stop") as resp:
                flips = await resp.json()
            elapsed = time.monotonic() - t0
            after = [await agent_counters(http, m) for m in metric_ports]
            pages_cpu = proc_cpu_s(pages.pid) - pages_cpu0
            load1 = os.getloadavg()[0]
        await asyncio.sleep(1.0)
        done.set()
        await asyncio.wait_for(follower, 10)
    finally:
        for a in agents:
            a.send_signal(signal.SIGTERM)
        for a in agents:
            try:
                a.wait(timeout=10)
            except subprocess.TimeoutExpired:
                a.kill()
        pages.terminate()
        pages.wait(timeout=10)
        await r.aclose()

    by_worker: dict[str, list[tuple[int, int, int, bool]]] = {}
    for eid_ms, worker, waiting_, ts_ms, up in rows:
        by_worker.setdefault(worker, []).append((eid_ms, waiting_, ts_ms, up))
    fresh_ms: list[float] = []
    missed = 0
    for i, t_flip, waiting in flips:
        t_ms = t_flip * 1000.0
        hit = next(
            (
                eid_ms - t_ms
                for eid_ms, w_, ts_ms, up in by_worker.get(f"w{i:02d}", [])
                if ts_ms >= t_ms and w_ == waiting and up
            ),
            None,
        )
        if hit is None:
            missed += 1
        else:
            fresh_ms.append(hit)
    cpu = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    scrapes = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    failed = sum(a[2] - b[2] for a, b in zip(after, before, strict=True))
    return {
        "interval_ms": interval_ms,
        "workers": n,
        "flips": len(flips),
        "matched": len(fresh_ms),
        "missed": missed,
        "p50_ms": statistics.median(fresh_ms) if fresh_ms else None,
        "p90_ms": pct(fresh_ms, 0.90) if fresh_ms else None,
        "p99_ms": pct(fresh_ms, 0.99) if fresh_ms else None,
        "max_ms": max(fresh_ms) if fresh_ms else None,
        "cpu_ms_per_scrape": 1000.0 * cpu / scrapes if scrapes else None,
        "scrapes_per_s_per_agent": scrapes / elapsed / n,
        "failed_scrapes_ratio": failed / scrapes if scrapes else 0.0,
        "agent_cpu_cores_total": cpu / elapsed,
        "page_server_cores": pages_cpu / elapsed,
        "loadavg_1m": (round(load0, 2), round(load1, 2)),
    }


def micro_costs() -> dict[str, float]:
    """In-process CPU cost (ms) of the pure parts, per scrape, on the real 55 kB page."""
    from workers.agent.parse import PageParser, parse_page
    from workers.telemetry.derive import DeriveState, Identity, derive

    tpl = PageTemplate(IDLE_PAGE.read_text())
    pages = [tpl.render(k, True).decode() for k in range(1, 201)]
    ident = Identity("c", "w", "decode")

    def per_call_ms(fn: Any, n: int = 200) -> float:
        t0 = time.process_time()
        for k in range(n):
            fn(k)
        return 1000.0 * (time.process_time() - t0) / n

    parser = PageParser()
    parsed = [parse_page(p) for p in pages]
    state = DeriveState()

    def step(k: int) -> None:
        nonlocal state
        _, state = derive(state, parsed[k], ident=ident, ts_ms=k, mono_s=k * 0.25)

    return {
        "parse_changed_ms": per_call_ms(lambda k: parser.parse(pages[k])),
        "parse_unchanged_ms": per_call_ms(lambda k: parser.parse(pages[0])),
        "derive_ms": per_call_ms(step),
    }


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def result(
    results: list[dict[str, Any]],
    micro: dict[str, float],
    load0: tuple[float, ...],
    load1: tuple[float, ...],
    duration_s: float,
) -> Result:
    """The ``telemetry_freshness`` section, from ``run_one``'s rows and ``micro_costs``."""
    at_goal = [r for r in results if r["interval_ms"] == GOAL_INTERVAL_MS]
    head = []
    if at_goal:
        worst = max(at_goal, key=lambda r: math.inf if r["p99_ms"] is None else r["p99_ms"])
        p99 = worst["p99_ms"]
        head.append(
            Headline(
                question="How fresh is worker telemetry in Redis?",
                metric=f"state change -> Redis, p99 at {GOAL_INTERVAL_MS} ms scrapes",
                slaplane=f"{_f(p99)} ms (p50 {_f(worst['p50_ms'])} ms)",
                baseline="-",
                goal=f'p99 < {GOAL_P99_MS:.0f} ms ("within a few hundred ms")',
                met=None if p99 is None else p99 < GOAL_P99_MS,
                conditions=f"{worst['workers']} workers, one agent process each, real vLLM "
                f"0.32.0 page, {duration_s:g} s"
                + (f", worst of {len(at_goal)} runs" if len(at_goal) > 1 else ""),
            )
        )
    rows = [
        [
            f"{r['interval_ms']} ms",
            r["workers"],
            f"{r['matched']}/{r['flips']}",
            _f(r["p50_ms"]),
            _f(r["p90_ms"]),
            _f(r["p99_ms"]),
            _f(r["max_ms"]),
            f"{100 * r['failed_scrapes_ratio']:.1f} %",
            "-" if r["cpu_ms_per_scrape"] is None else f"{r['cpu_ms_per_scrape']:.2f}",
            f"{r['agent_cpu_cores_total']:.2f}",
            f"{r['loadavg_1m'][0]}, {r['loadavg_1m'][1]}",
        ]
        for r in results
    ]
    table = Table(title="", columns=COLUMNS, rows=rows)
    failing = any(r["failed_scrapes_ratio"] > 0.01 for r in results)
    return Result(
        section="telemetry_freshness",
        title="Telemetry freshness",
        question="How long after a worker's state changes does Redis reflect it?",
        order=15,
        headline=head,
        tables=[table],
        notes=[
            "Freshness (ms) = Redis stream entry id - time a worker flipped between vLLM's idle "
            "page and a queueing one (every 1-2 s); floor: half an interval on average plus "
            f"fetch + parse ({micro['parse_changed_ms']:.2f} ms) + publish.",
            f"Load average (1/5/15 min) at start {_load(load0)}, at end {_load(load1)} "
            f"({os.cpu_count()} cores shared with other jobs).",
        ]
        + (
            [
                "A run with > 1 % failed scrapes had the cores oversubscribed: a scrape missed "
                "its timeout (80 % of the interval), so the change showed a scrape later."
            ]
            if failing
            else []
        ),
    )


def _load(la: tuple[float, ...]) -> str:
    return " / ".join(f"{x:.2f}" for x in la)


async def amain(args: argparse.Namespace) -> None:
    load0 = os.getloadavg()
    micro = micro_costs()
    print(json.dumps(micro), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = (None, args.redis_url) if args.redis_url else start_redis(Path(tmp))
        try:
            results = []
            for _ in range(args.repeat):
                for iv in [int(x) for x in args.intervals.split(",")]:
                    res = await run_one(args.workers, iv, args.duration_s, url)
                    print(json.dumps(res), flush=True)
                    results.append(res)
        finally:
            if proc is not None and proc.poll() is not None:
                log = (Path(tmp) / "redis.log").read_text()[-2000:]
                print(f"redis-server exited early ({proc.returncode}):\n{log}", file=sys.stderr)
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    if args.record:
        section = result(results, micro, load0, os.getloadavg(), args.duration_s)
        print(f"wrote {write_result(section)}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--intervals", default="100,250", help="comma-separated scrape intervals, ms")
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=1, help="run the whole set N times")
    ap.add_argument("--redis-url", default=None, help="existing Redis (default: a private one)")
    ap.add_argument(
        "--record",
        action="store_true",
        help="also write benchmarks/results/telemetry_freshness.json (the results page's "
        "data; default: print only)",
    )
    ap.add_argument("--serve-pages", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--control-port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_pages:
        asyncio.run(serve_pages([int(p) for p in args.serve_pages.split(",")], args.control_port))
    else:
        asyncio.run(amain(args))


if __name__ == "__main__":
    main()
