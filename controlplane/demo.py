"""``slaplane demo``: the main job until the full walk-through exists.

Starts a live simulated prefill/decode cluster — ``slaplane sim-worker`` processes with
a ``slaplane agent`` beside each, a real Redis, the ``slaplane gateway`` in front (and the
``slaplane controller`` beside it) — creates three tenants with API keys in the store,
replays a slice of the Azure code trace through the gateway with a seeded tenant mix,
and shows live worker telemetry and per-tenant SLA attainment.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from controlplane.config import CommonSettings, build_settings
from controlplane.schemas import Priority, RateLimit, TenantSLA

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = PROJECT / "data" / "traces" / "AzureLLMInferenceTrace_code.csv"

# name → (SLA, API key, share of the traffic)
DEMO_TENANTS: dict[str, tuple[TenantSLA, str, float]] = {
    "premium": (
        TenantSLA(tenant="premium", priority=Priority.PREMIUM, ttft_ms=1000, itl_ms=50),
        "sk-demo-premium",
        0.2,
    ),
    "standard": (
        TenantSLA(tenant="standard", priority=Priority.STANDARD, ttft_ms=2000, itl_ms=100),
        "sk-demo-standard",
        0.5,
    ),
    "batch": (
        TenantSLA(
            tenant="batch",
            priority=Priority.BATCH,
            ttft_ms=8000,
            itl_ms=200,
            rate_limit=RateLimit(rpm=600),
        ),
        "sk-demo-batch",
        0.3,
    ),
}


class DemoSettings(CommonSettings):
    duration_s: float = 45.0
    prefill: int = 1
    decode: int = 1
    profile: str = "cpu-tiny"
    policy: str = "sla"
    interval_ms: int = 250
    rate_scale: float = 3.0
    trace_offset_s: float = 600.0
    trace: Path = DEFAULT_TRACE
    max_prompt_tokens: int = 3500
    max_output_tokens: int = 256
    controller: bool = True
    seed: int = 0
    workdir: Path = PROJECT / "out" / "demo"


@dataclass
class TenantStats:
    sent: int = 0
    ok: int = 0
    rejected: int = 0
    errors: int = 0
    met: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    tpot_ms: list[float] = field(default_factory=list)
    last_error: str = ""


def load_trace(path: Path) -> list[tuple[float, int, int]]:
    """(offset_s, prompt_tokens, output_tokens) from the Azure CSV, offsets from the first row."""
    rows: list[tuple[float, int, int]] = []
    t0: datetime | None = None
    with path.open() as f:
        for r in csv.DictReader(f):
            ts = datetime.strptime(r["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f")
            t0 = t0 or ts
            rows.append(
                ((ts - t0).total_seconds(), int(r["ContextTokens"]), int(r["GeneratedTokens"]))
            )
    return rows


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


async def one_request(
    session: Any,
    gateway: str,
    model: str,
    sla: TenantSLA,
    key: str,
    prompt: list[int],
    out_tokens: int,
    st: TenantStats,
) -> None:
    """One streamed completion through the gateway, measured like the gateway measures it."""
    st.sent += 1
    t0 = time.perf_counter()
    body = {"model": model, "prompt": prompt, "max_tokens": out_tokens, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}  # fmt: skip
    try:
        first: float | None = None
        last = t0
        n = 0
        headers = {"Authorization": f"Bearer {key}"}
        async with session.post(f"{gateway}/v1/completions", json=body, headers=headers) as resp:
            if resp.status == 429:
                st.rejected += 1
                return
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:150]}")
            async for line in resp.content:
                if line.startswith(b'data: {"error"'):
                    raise RuntimeError(line.decode()[:150])
                if line.startswith(b"data: {") and b'"text":"' in line:
                    last = time.perf_counter()
                    first = first or last
                    n += 1
        e2e = (time.perf_counter() - t0) * 1000
        if first is None:
            raise RuntimeError("stream ended without tokens")
        st.ok += 1
        ttft = (first - t0) * 1000
        tpot = (last - first) * 1000 / (n - 1) if n > 1 else 0.0
        st.ttft_ms.append(ttft)
        st.tpot_ms.append(tpot)
        st.met += int(sla.judge(ttft, tpot, e2e, "ok").met)
    except Exception as exc:  # any failure is counted; the demo goes on
        st.errors += 1
        st.last_error = f"{type(exc).__name__}: {exc}"[:200]


def render(snaps: dict[str, Any], stats: dict[str, TenantStats], elapsed: float, cfg: Any) -> Any:
    from rich.console import Group
    from rich.table import Table

    def f(v: float | None, fmt: str = "{:.0f}") -> str:
        return "-" if v is None else fmt.format(v)

    w = Table(title=f"workers (live from Redis) — {elapsed:.0f}/{cfg.duration_s:.0f} s")
    for col in (
        "worker",
        "up",
        "kv%",
        "run",
        "wait",
        "TTFT p50/p99",
        "ITL p50/p99",
        "tok/s",
        "age",
    ):
        w.add_column(col, justify="right")
    now = time.time()
    for wid, s in sorted(snaps.items()):
        w.add_row(wid, "yes" if s.up else "[red]DOWN", f(s.kv_usage * 100, "{:.1f}"),
                  str(s.running), str(s.waiting), f"{f(s.ttft_p50_ms)}/{f(s.ttft_p99_ms)}",
                  f"{f(s.itl_p50_ms, '{:.1f}')}/{f(s.itl_p99_ms, '{:.1f}')}",
                  f(s.prompt_tokens_per_s + s.gen_tokens_per_s),
                  f"{(now - s.ts_ms / 1000) * 1000:.0f}ms")  # fmt: skip
    t = Table(title="tenants (client side, through the gateway)")
    for col in ("tenant", "SLA ttft/itl ms", "sent", "ok", "429", "err", "TTFT p50/p99",
                "TPOT p50", "attainment"):  # fmt: skip
        t.add_column(col, justify="right")
    for name, st in stats.items():
        sla = DEMO_TENANTS[name][0]
        done = st.ok + st.rejected + st.errors
        att = f"{100 * st.met / done:.1f}%" if done else "-"
        t.add_row(name, f"{sla.ttft_ms:.0f}/{sla.itl_ms:.0f}", str(st.sent), str(st.ok),
                  str(st.rejected), str(st.errors),
                  f"{f(pct(st.ttft_ms, 0.5))}/{f(pct(st.ttft_ms, 0.99))}",
                  f(pct(st.tpot_ms, 0.5), "{:.1f}"), att)  # fmt: skip
    return Group(w, t)


async def seed_tenants(redis_url: str, cluster: str) -> None:
    """Tenants and keys, and a neutral control state for the demo's cluster: a shared
    Redis keeps the last run's admit fractions (e.g. batch at 0), which would make
    each run start where the previous one's controller left off."""
    from controlplane.policy.control_fields import ADMIT_PREFIX, DRAINING, WEIGHT_PREFIX
    from controlplane.state import open_store

    store = open_store(redis_url)
    try:
        for sla, key, _ in DEMO_TENANTS.values():
            await store.put_tenant(sla)
            await store.put_api_key(hashlib.sha256(key.encode()).hexdigest(), sla.tenant)
        old = await store.get_control(cluster)
        reset = {f: "1.000" for f in old if f.startswith((WEIGHT_PREFIX, ADMIT_PREFIX))}
        if old.get(DRAINING):
            reset[DRAINING] = ""
        if reset:
            await store.set_control(cluster, reset)
    finally:
        await store.close()


async def drive(cfg: DemoSettings, redis_url: str, gateway: str) -> dict[str, Any]:
    """Replay the trace through the gateway while rendering the live view."""
    import aiohttp
    from rich.live import Live

    from controlplane.state import open_store

    rng = random.Random(cfg.seed)
    trace = [r for r in load_trace(cfg.trace) if r[0] >= cfg.trace_offset_s]
    t_first = trace[0][0] if trace else 0.0
    names = list(DEMO_TENANTS)
    weights = [DEMO_TENANTS[n][2] for n in names]
    stats = {n: TenantStats() for n in names}
    store = open_store(redis_url)
    tasks: set[asyncio.Task[None]] = set()
    snaps: dict[str, Any] = {}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        headers = {"Authorization": f"Bearer {DEMO_TENANTS['standard'][1]}"}
        async with session.get(f"{gateway}/v1/models", headers=headers) as resp:
            model = (await resp.json())["data"][0]["id"]
        t_start = time.monotonic()
        i = 0
        with Live(render(snaps, stats, 0, cfg), refresh_per_second=4) as live:
            while (elapsed := time.monotonic() - t_start) < cfg.duration_s:
                while i < len(trace) and (trace[i][0] - t_first) / cfg.rate_scale <= elapsed:
                    _, p, o = trace[i]
                    p = min(p, cfg.max_prompt_tokens)
                    o = max(2, min(o, cfg.max_output_tokens))
                    name = rng.choices(names, weights)[0]
                    sla, key, _ = DEMO_TENANTS[name]
                    prompt = [rng.randrange(4, 4000) for _ in range(p)]
                    task = asyncio.create_task(
                        one_request(session, gateway, model, sla, key, prompt, o, stats[name])
                    )
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    i += 1
                with contextlib.suppress(Exception):  # keep the view alive through a blip
                    snaps = await store.get_snapshots(cfg.cluster)
                live.update(render(snaps, stats, elapsed, cfg))
                await asyncio.sleep(0.25)
            if tasks:
                await asyncio.wait(tasks, timeout=60)
            live.update(render(snaps, stats, cfg.duration_s, cfg))
    await store.close()
    return {
        n: {
            "sent": s.sent,
            "ok": s.ok,
            "rejected_429": s.rejected,
            "errors": s.errors,
            "sla_met": s.met,
            "ttft_p50_ms": pct(s.ttft_ms, 0.5),
            "ttft_p99_ms": pct(s.ttft_ms, 0.99),
            "tpot_p50_ms": pct(s.tpot_ms, 0.5),
            "last_error": s.last_error,
        }
        for n, s in stats.items()
    }


def run(cfg: DemoSettings, redis_url: str) -> dict[str, Any]:
    from controlplane.procs import Child, free_port, slaplane_argv, wait_http_ok

    logs = cfg.workdir / "logs"
    children: list[Child] = []

    def start(name: str, *args: str) -> Child:
        c = Child(name, slaplane_argv(*args), logs / f"{name}.log").start()
        children.append(c)
        return c

    common = ("--cluster", cfg.cluster, "--redis-url", redis_url)
    try:
        asyncio.run(seed_tenants(redis_url, cfg.cluster))
        for role, n in (("prefill", cfg.prefill), ("decode", cfg.decode)):
            for i in range(n):
                port, wid = free_port(), f"{role}-{i}"
                url = f"http://127.0.0.1:{port}"
                w = start(wid, "sim-worker", "--role", role, "--port", str(port),
                          "--profile", cfg.profile, "--worker-id", wid)  # fmt: skip
                wait_http_ok(f"{url}/health", 30, w)
                start(f"agent-{wid}", "agent", "--worker-url", url, "--worker-id", wid,
                      "--role", role, "--interval-ms", str(cfg.interval_ms), *common)  # fmt: skip
        gw_port = free_port()
        gw = start("gateway", "gateway", "--port", str(gw_port), "--policy", cfg.policy,
                   "--profile", cfg.profile, "--require-key", *common)  # fmt: skip
        gateway = f"http://127.0.0.1:{gw_port}"
        wait_http_ok(f"{gateway}/ready", 30, gw)
        if cfg.controller:
            start("controller", "controller", *common)
        tenants = asyncio.run(drive(cfg, redis_url, gateway))
        return {"gateway": gateway, "policy": cfg.policy, "tenants": tenants,
                "logs": str(logs)}  # fmt: skip
    finally:
        for c in reversed(children):
            c.stop()


def ensure_redis(url: str, workdir: Path) -> tuple[str, Any]:
    """Use ``url`` if it answers; otherwise start a private redis-server for the demo."""
    import redis

    from controlplane.procs import Child, free_port

    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        return url, None
    except redis.RedisError:
        port = free_port()
        d = Path(tempfile.mkdtemp(prefix="slaplane-redis-"))
        c = Child("redis", ["redis-server", "--port", str(port), "--save", "", "--dir", str(d)],
                  workdir / "logs" / "redis.log").start()  # fmt: skip
        time.sleep(0.3)
        return f"redis://127.0.0.1:{port}/0", c


def main(
    duration_s: Annotated[float | None, typer.Option(help="How long to drive load (s).")] = None,
    prefill: Annotated[int | None, typer.Option(help="Prefill sim workers.")] = None,
    decode: Annotated[int | None, typer.Option(help="Decode sim workers.")] = None,
    profile: Annotated[
        str | None, typer.Option(help="Sim latency profile: cpu-tiny | h100-llama3.1-8b.")
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="Gateway routing policy (round_robin, ..., sla).")
    ] = None,
    rate_scale: Annotated[
        float | None, typer.Option(help="Multiply the trace's arrival rate.")
    ] = None,
    trace_offset_s: Annotated[
        float | None, typer.Option(help="Start this far into the trace.")
    ] = None,
    interval_ms: Annotated[int | None, typer.Option(help="Agent scrape interval.")] = None,
    controller: Annotated[
        bool | None, typer.Option(help="Run slaplane controller (advisory) beside the gateway.")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis URL; a private one is started if unreachable.")
    ] = None,
    cluster: Annotated[str | None, typer.Option(help="Cluster name (Redis hash tag).")] = None,
) -> None:
    """Run a live simulated prefill/decode cluster behind the SLA-aware gateway, replay the
    Azure code trace through it for three tenants, and show telemetry and SLA attainment."""
    cfg = build_settings(
        DemoSettings, duration_s=duration_s, prefill=prefill, decode=decode, profile=profile,
        policy=policy, rate_scale=rate_scale, trace_offset_s=trace_offset_s,
        interval_ms=interval_ms, controller=controller, redis_url=redis_url, cluster=cluster,
    )  # fmt: skip
    url, redis_child = ensure_redis(cfg.redis_url, cfg.workdir)
    try:
        summary = run(cfg, url)
    finally:
        if redis_child is not None:
            redis_child.stop()
    out = cfg.workdir / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    typer.echo(f"summary: {out}  logs: {summary['logs']}")
    if not any(t["ok"] for t in summary["tenants"].values()):
        raise typer.Exit(1)
