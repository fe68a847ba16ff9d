"""How fast the worker model simulates: the replay driver's budget is a 1-hour trace
of ~9k requests on 8 workers in well under 60 s on one core.

Drives 8 engines with a synthetic Poisson trace (Mooncake-like prompt lengths with
shared ``hash_ids`` prefixes) the way a discrete-event replay would: before each
arrival every engine is advanced to the arrival time with ``horizon_s`` set, so
pure-decode stretches fast-forward. Prints wall time, simulated steps per second
and request-level results.

    .venv/bin/python benchmarks/bench_sim_engine.py [--requests 9000] [--profile h100-llama3.1-8b]
    .venv/bin/python benchmarks/bench_sim_engine.py --mooncake PATH/synthetic_trace.jsonl
    .venv/bin/python benchmarks/bench_sim_engine.py --compare-ref HEAD~1 --rounds 5
    .venv/bin/python benchmarks/bench_sim_engine.py --record   # the results page's figure

``--record`` also writes ``benchmarks/results/sim_engine_speed.json`` (section
``sim_engine_speed`` of ``benchmarks/RESULTS.md``, rendered by ``make results``); without
it the script only prints. Goal: the default trace (9,000 requests, 1 simulated hour, 8
workers) in < 60 s wall on one core.

``--compare-ref REV`` times the worker model at git revision REV (its ``workers/sim``
engine, profile, KV cache, stats and types, imported as a private package) against the
working tree on the same trace in one process, alternating, and prints the median wall
(process CPU) time of each and their ratio: a speed check of a model change with the host's load
the same for both sides.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
from controlplane.profiles import load_profile  # noqa: E402
from workers.sim import Engine, EngineConfig, SimRequest  # noqa: E402

GOAL_WALL_S = 60.0
"""Budget for the default trace: 9,000 requests over one simulated hour on 8 workers."""


def synthetic_trace(
    n: int, duration_s: float, seed: int, max_model_len: int
) -> list[tuple[float, SimRequest]]:
    rng = random.Random(seed)
    t = 0.0
    rate = n / duration_s
    out: list[tuple[float, SimRequest]] = []
    next_hash = 10_000
    for i in range(n):
        t += rng.expovariate(rate)
        prompt = max(16, min(30_000, int(rng.lognormvariate(7.6, 1.0))))
        max_tokens = max(1, min(max_model_len // 4, 2_000, int(rng.lognormvariate(4.6, 0.9))))
        prompt = min(prompt, max_model_len - max_tokens)
        shared = rng.randrange(0, 8) if rng.random() < 0.5 else None  # 8 common system prompts
        n_hash = -(-prompt // 512)
        hashes: list[int] = []
        if shared is not None:
            hashes = [shared * 100 + j for j in range(min(n_hash, 6))]
        while len(hashes) < n_hash:
            hashes.append(next_hash)
            next_hash += 1
        out.append((t, SimRequest(f"r{i}", prompt, max_tokens, hash_ids=hashes)))
    return out


def mooncake_trace(path: str) -> list[tuple[float, SimRequest]]:
    """A Mooncake-format JSONL trace (timestamp ms, input/output_length, hash_ids)."""
    out: list[tuple[float, SimRequest]] = []
    with open(path) as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            req = SimRequest(
                f"m{i}", r["input_length"], max(1, r["output_length"]), hash_ids=r["hash_ids"]
            )
            out.append((r["timestamp"] / 1000.0, req))
    return out


REF_MODULES = ("engine", "profile", "kvcache", "stats", "types")
PROFILE_PATHS = ("controlplane/profiles/profile.py", "workers/sim/profile.py")
"""Where the profile module is at a rev: since issue 14, or before it."""


def load_ref(rev: str) -> Any:
    """``workers/sim`` (and the profile module) at git ``rev`` as a private package;
    returns its (Engine, EngineConfig, SimRequest, load_profile)."""
    import importlib
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pkg = "slaplane_ref_sim"
    d = Path(tempfile.mkdtemp(prefix="bench-ref-")) / pkg
    d.mkdir()
    (d / "__init__.py").write_text("")
    for m in REF_MODULES:
        paths = PROFILE_PATHS if m == "profile" else (f"workers/sim/{m}.py",)
        for path in paths:
            got = subprocess.run(
                ["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True
            )
            if got.returncode == 0:
                break
        else:
            raise SystemExit(f"{rev}: no {m} module ({', '.join(paths)})")
        src = got.stdout.replace("controlplane.profiles", f"{pkg}.profile")
        (d / f"{m}.py").write_text(src.replace("workers.sim.", f"{pkg}."))
    data = repr(str(root / "controlplane/profiles"))
    prof = (d / "profile.py").read_text()
    (d / "profile.py").write_text(
        prof.replace('Path(__file__).parent / "profiles"', f"Path({data})").replace(
            "PROFILES_DIR = Path(__file__).parent\n", f"PROFILES_DIR = Path({data})\n"
        )
    )
    sys.path.insert(0, str(d.parent))
    eng = importlib.import_module(f"{pkg}.engine")
    typ = importlib.import_module(f"{pkg}.types")
    pr = importlib.import_module(f"{pkg}.profile")
    return eng.Engine, typ.EngineConfig, typ.SimRequest, pr.load_profile


def compare(rev: str, n: int, workers: int, profile_name: str, duration_s: float, seed: int,
            rounds: int) -> None:  # fmt: skip
    """Same synthetic trace through the model at ``rev`` and the working tree, alternating."""
    import statistics

    ref = load_ref(rev)
    cur = (Engine, EngineConfig, SimRequest, load_profile)
    walls: dict[str, list[float]] = {"ref": [], "cur": []}
    steps: dict[str, int] = {}
    for impl in (ref, cur):  # warm-up (imports, allocator), not timed
        _drive(impl, n // 10, workers, profile_name, duration_s / 10, seed)
    for k in range(rounds):
        for name, impl in ((("ref", ref), ("cur", cur)) if k % 2 == 0 else
                           (("cur", cur), ("ref", ref))):  # fmt: skip
            wall, nsteps = _drive(impl, n, workers, profile_name, duration_s, seed)
            walls[name].append(wall)
            steps[name] = nsteps
    r, c = statistics.median(walls["ref"]), statistics.median(walls["cur"])
    print(
        f"profile={profile_name} requests={n} workers={workers} rounds={rounds} "
        f"CPU s, median: ref={rev}: {r:.3f}s ({steps['ref']} steps)  working tree: {c:.3f}s "
        f"({steps['cur']} steps)  cur/ref={c / r:.3f}"
    )


def _drive(
    impl: Any, n: int, workers: int, profile_name: str, duration_s: float, seed: int
) -> tuple[float, int]:
    engine_cls, config_cls, request_cls, loader = impl
    profile = loader(profile_name)
    engines = [engine_cls(profile, config_cls()) for _ in range(workers)]
    trace = [
        (t, request_cls(r.request_id, r.prompt_tokens, r.max_tokens, hash_ids=r.hash_ids))
        for t, r in synthetic_trace(n, duration_s, seed, profile.max_model_len)
    ]
    steps = 0
    cpu0 = time.process_time()
    for i, (t, req) in enumerate(trace):
        for eng in engines:
            while (nxt := eng.next_event_s()) is not None and nxt < t:
                res = eng.step(nxt, horizon_s=t)
                if res is None:
                    break
                steps += res.num_steps
        with contextlib.suppress(ValueError):
            engines[i % workers].add_request(req, t)
    for eng in engines:
        while (nxt := eng.next_event_s()) is not None:
            res = eng.step(nxt, horizon_s=float("inf"))
            if res is None:
                break
            steps += res.num_steps
    return time.process_time() - cpu0, steps


def run(
    n: int,
    workers: int,
    profile_name: str,
    duration_s: float,
    seed: int,
    kv_tokens: int | None,
    trace_path: str | None = None,
) -> dict[str, Any]:
    """Drive the engines over the trace; returns what ``main`` prints and records."""
    profile = load_profile(profile_name)
    engines = [Engine(profile, EngineConfig(kv_capacity_tokens=kv_tokens)) for _ in range(workers)]
    if trace_path:
        trace = mooncake_trace(trace_path)
        n, duration_s = len(trace), trace[-1][0]
    else:
        trace = synthetic_trace(n, duration_s, seed, profile.max_model_len)
    finished = 0
    rejected = 0
    steps = 0
    ttfts: list[float] = []
    wall0 = time.perf_counter()
    cpu0 = time.process_time()

    def advance(eng: Engine, until_s: float) -> None:
        nonlocal finished, steps
        while (t := eng.next_event_s()) is not None and t < until_s:
            res = eng.step(t, horizon_s=until_s)
            if res is None:
                break
            steps += res.num_steps
            finished += len(res.finished)
            ttfts.extend(f.ttft_s for f in res.finished if f.ttft_s is not None)

    for i, (t, req) in enumerate(trace):
        for eng in engines:
            advance(eng, t)
        try:
            engines[i % workers].add_request(req, t)
        except ValueError:  # longer than max_model_len: vLLM answers 400
            rejected += 1
    for eng in engines:
        advance(eng, float("inf"))
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    ttfts.sort()
    hits = sum(e.stats.prefix_cache_hits_total for e in engines)
    queries = sum(e.stats.prefix_cache_queries_total for e in engines)
    return {
        "profile": profile_name,
        "trace": "Mooncake trace" if trace_path else "synthetic Poisson trace",
        "kv_tokens": kv_tokens,
        "requests": n,
        "workers": workers,
        "simulated_s": duration_s,
        "wall_s": wall,
        "cpu_s": cpu,
        "engine_steps": steps,
        "steps_per_s": steps / wall,
        "finished": finished,
        "rejected": rejected,
        "ttft_p50_s": ttfts[len(ttfts) // 2],
        "ttft_p99_s": ttfts[int(len(ttfts) * 0.99)],
        "prefix_hit_ratio": hits / queries,
        "preemptions": sum(e.stats.num_preemptions_total for e in engines),
    }


def is_goal_run(r: dict[str, Any]) -> bool:
    """The goal is stated for the default workload: at least 9,000 requests over at least
    one simulated hour on at least 8 workers, profile KV capacity (a smaller run does not
    answer it)."""
    big = r["requests"] >= 9000 and r["simulated_s"] >= 3600 and r["workers"] >= 8
    return bool(big and r["kv_tokens"] is None)


def result(r: dict[str, Any], load0: tuple[float, ...], load1: tuple[float, ...]) -> Result:
    goal_run = is_goal_run(r)
    trace = r["trace"]
    conditions = (
        f"{r['requests']:,} requests, {r['simulated_s'] / 3600:.2g} simulated h, "
        f"{r['workers']} workers, {r['profile']}, {trace}, one process"
        + (f", KV {r['kv_tokens']} tokens" if r["kv_tokens"] else "")
    )
    return Result(
        section="sim_engine_speed",
        title="Worker-model speed (sim engine)",
        question="How fast does the worker model simulate a 1-hour, ~9k-request trace on "
        "8 workers on one core (the replay driver's budget)?",
        order=80,
        headline=[
            Headline(
                question="Is the worker model fast enough for 1 h of trace in a minute?",
                metric="wall s to simulate the trace",
                slaplane=f"{r['wall_s']:.2f} s",
                baseline="-",
                goal=f"< {GOAL_WALL_S:.0f} s for 1 h, 9k requests, 8 workers",
                met=(r["wall_s"] < GOAL_WALL_S) if goal_run else None,
                conditions=conditions,
            )
        ],
        tables=[
            Table(
                title="",
                columns=[
                    "trace",
                    "requests",
                    "workers",
                    "simulated s",
                    "wall s",
                    "CPU s",
                    "engine steps/s",
                    "finished / rejected",
                ],
                rows=[
                    [
                        trace,
                        r["requests"],
                        r["workers"],
                        round(r["simulated_s"]),
                        round(r["wall_s"], 2),
                        round(r["cpu_s"], 2),
                        round(r["steps_per_s"]),
                        f"{r['finished']} / {r['rejected']}",
                    ]
                ],
            )
        ],
        notes=[
            f"Simulated outcome (a sanity check, not a speed figure): TTFT p50 "
            f"{r['ttft_p50_s']:.3f} s, p99 {r['ttft_p99_s']:.3f} s, prefix hit ratio "
            f"{r['prefix_hit_ratio']:.3f}, {r['preemptions']} preemptions; "
            f"{r['engine_steps']:,} engine steps.",
            f"Load average (1/5/15 min) at start {_load(load0)}, at end {_load(load1)} "
            f"({os.cpu_count()} cores shared with other jobs).",
        ]
        + ([] if goal_run else ["Smaller than the goal's workload: goal not judged."]),
    )


def _load(la: tuple[float, ...]) -> str:
    return " / ".join(f"{x:.2f}" for x in la)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=9000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--profile", default="h100-llama3.1-8b")
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mooncake", default=None, help="replay a Mooncake JSONL trace instead")
    ap.add_argument("--kv-tokens", type=int, default=None, help="override KV capacity (stress)")
    ap.add_argument("--compare-ref", default=None, help="git revision to time against")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (--compare-ref)")
    ap.add_argument(
        "--record",
        action="store_true",
        help="also write benchmarks/results/sim_engine_speed.json (the results page's data; "
        "default: print only)",
    )
    a = ap.parse_args()
    if a.compare_ref:
        if a.record:
            ap.error("--record records the working tree alone; drop --compare-ref")
        compare(a.compare_ref, a.requests, a.workers, a.profile, a.duration_s, a.seed, a.rounds)
        return
    load0 = os.getloadavg()
    r = run(a.requests, a.workers, a.profile, a.duration_s, a.seed, a.kv_tokens, a.mooncake)
    load1 = os.getloadavg()
    print(
        f"profile={r['profile']} requests={r['requests']} workers={r['workers']} "
        f"simulated={r['simulated_s']:.0f}s wall={r['wall_s']:.2f}s cpu={r['cpu_s']:.2f}s "
        f"engine_steps={r['engine_steps']} steps_per_s={r['steps_per_s']:,.0f} "
        f"finished={r['finished']} rejected={r['rejected']} ttft_p50={r['ttft_p50_s']:.3f}s "
        f"ttft_p99={r['ttft_p99_s']:.3f}s prefix_hit_ratio={r['prefix_hit_ratio']:.3f} "
        f"preemptions={r['preemptions']}"
    )
    if a.record:
        print(f"wrote {write_result(result(r, load0, load1))}")


if __name__ == "__main__":
    main()
