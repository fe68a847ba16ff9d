"""P/D mode of ``slaplane profile``: what a prefill/decode pair costs beyond a plain server.

A P/D pair is not two plain servers: the prefill worker's KV connector saves every
prompt's KV inside its forward step, the decode worker loads it inside its own step
(stalling every co-running stream), and engines sharing cores run slower. Measured
against a live pair and relative to ``--base-profile``, these become the profile's
``kv_save`` / ``kv_load`` rows and ``decode_scale``. The points (``pd_save``,
``pd_join``, ``decode_pd``, ``pd_remote``), ``--co-load`` and the output format:
``docs/pd-profiling.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from controlplane.profiler.client import discover_model, prefill_handoff, timed_completion
from controlplane.profiler.measure import measure
from controlplane.profiler.plan import Checkpoint, Point, Result
from controlplane.profiler.run import measure_points
from controlplane.profiles import Profile, parse_profile

BG_PROMPT_TOKENS = 64
"""Prompt of the background streams: below one 128-token block, so the connector moves
(and saves) nothing for them and they are pure decodes after their first step."""


_DECLARED_TERMS = (
    "kv_save_base_ms",
    "kv_save_ms_per_token",
    "kv_load_base_ms",
    "kv_load_ms_per_token",
    "decode_scale",
)


def make_pd_plan(
    prompt_lengths: Iterable[int],
    join_batches: Iterable[int],
    decode_points: Iterable[tuple[int, int]],
    max_model_len: int,
) -> list[Point]:
    lens = sorted({n for n in prompt_lengths if 1 < n < max_model_len})
    pts = [Point("pd_save", 1, n) for n in lens]
    pts += [Point("pd_remote", 1, n) for n in lens]
    pts += [Point("decode_pd", b, c) for b, c in sorted(set(decode_points))]
    pts += [Point("pd_join", b, n) for b in sorted(set(join_batches)) for n in lens]
    return pts


def _seed(point: Point, seed: int) -> int:
    return seed * 1_000_003 + zlib.crc32(repr(point.key).encode()) % 1_000_000


QUIET_WINDOW_S = 0.3
"""Baseline window of each ``pd_join`` round: the background batch's own steps."""
JOIN_COUNT_WAIT_S = 5.0
"""How long ``pd_join`` waits for the decode worker's /metrics to count its joins."""


def hist_sum_count(text: str, family: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram family over all its label sets."""
    total = count = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name != family:
            continue
        for s in fam.samples:
            if s.name == f"{family}_sum":
                total += s.value
            elif s.name == f"{family}_count":
                count += s.value
    return total, count


ITL = "vllm:inter_token_latency_seconds"
PREFILL_TIME = "vllm:request_prefill_time_seconds"


async def _scrape(
    session: aiohttp.ClientSession, base_url: str
) -> tuple[float, float, float, float]:
    async with session.get(f"{base_url}/metrics") as r:
        r.raise_for_status()
        text = await r.text()
    return (*hist_sum_count(text, ITL), *hist_sum_count(text, PREFILL_TIME))


async def _join_round(
    session: aiohttp.ClientSession,
    prefill_url: str,
    decode_url: str,
    model: str,
    point: Point,
    *,
    joins: int,
    decode_tokens: int,
    seed: int,
) -> tuple[float | None, str, float]:
    """One round of ``pd_join`` (``docs/pd-profiling.md``): ms by which the step admitting a
    remote-KV request exceeds the background batch's own step, or None and the reason
    when the joins did not all run while the whole background batch was decoding; and
    how many times longer than the streams the round's window was (streams ending early
    are lengthened by that much next round)."""
    handles = []
    for j in range(joins):  # the prefill side first: its time must not overlap the window
        _, params = await prefill_handoff(session, prefill_url, model, point.tokens, seed + j)
        handles.append(params)
    started = asyncio.Event()
    left = [point.batch]

    def first() -> None:
        left[0] -= 1
        if left[0] == 0:
            started.set()

    bg = asyncio.gather(
        *(
            timed_completion(
                session,
                decode_url,
                model,
                BG_PROMPT_TOKENS,
                decode_tokens,
                seed + 500 + i,
                on_first=first,
            )
            for i in range(point.batch)
        )
    )
    try:
        await asyncio.wait_for(started.wait(), 60.0)
        m0 = await _scrape(session, decode_url)
        await asyncio.sleep(QUIET_WINDOW_S)
        m1 = await _scrape(session, decode_url)
        for j, params in enumerate(handles):
            await timed_completion(
                session, decode_url, model, point.tokens, 1, seed + j, kv_transfer_params=params
            )
        t_end = time.perf_counter()  # the window: the joins ran beside the batch until now
        m2 = await _scrape(session, decode_url)
        # vLLM's /metrics can trail the responses: wait (bounded) until every join's
        # prefill is counted, instead of throwing the round away for a late page
        wait_until = time.perf_counter() + JOIN_COUNT_WAIT_S
        while m2[3] - m1[3] < joins and time.perf_counter() < wait_until:
            await asyncio.sleep(0.05)
            m2 = await _scrape(session, decode_url)
    finally:
        streams = await bg
    start = min(st.start_s for st in streams)
    end = min(st.end_s for st in streams)
    overrun = (t_end - start) / max(1e-3, end - start)
    if end <= t_end:
        return None, ENDED_EARLY, overrun
    d_itl, n_itl = m1[0] - m0[0], m1[1] - m0[1]
    d_pf, n_pf = m2[2] - m1[2], m2[3] - m1[3]
    if n_itl < 1:
        return None, "no background decode step in the quiet window", overrun
    if n_pf != joins:
        return None, f"/metrics counted {n_pf:g} of {joins} joins", overrun
    return (d_pf / n_pf - d_itl / n_itl) * 1000.0, "", overrun


ENDED_EARLY = "a background stream ended before the joins landed"
GROWTH_MARGIN = 1.5
"""After a round whose background streams ended too soon, the next round's streams are
this much longer than the window measured (at least twice as long), up to what
``--max-model-len`` leaves after their prompt."""

CO_PROMPT_TOKENS = 1400
"""Prompt of the co-load on the prefill worker (a typical Azure code prompt)."""
CO_BATCH = 4
"""Streams of the co-load on the decode worker."""


@contextlib.asynccontextmanager
async def co_load(
    session: aiohttp.ClientSession, url: str, model: str, on_prefill: bool, seed: int
) -> AsyncIterator[None]:
    """Keep the *other* engine of the pair busy while a point is measured, as it is under
    traffic: back-to-back P/D prefills of ``CO_PROMPT_TOKENS`` on the prefill worker, or
    ``CO_BATCH`` decode streams on the decode worker. On a box where the engines share
    cores with each other's API servers (and everything else), a step measured beside an
    idle partner is faster than the same step under traffic."""

    async def loop() -> None:
        k = 0
        while True:
            k += 1
            if on_prefill:
                await prefill_handoff(session, url, model, CO_PROMPT_TOKENS, seed + k)
            else:
                await asyncio.gather(
                    *(
                        timed_completion(
                            session, url, model, BG_PROMPT_TOKENS, 256, seed + 100 * k + i
                        )
                        for i in range(CO_BATCH)
                    )
                )

    task = asyncio.create_task(loop())
    try:
        await asyncio.sleep(0.2)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def measure_pd(
    session: aiohttp.ClientSession,
    prefill_url: str,
    decode_url: str,
    model: str,
    point: Point,
    *,
    repeats: int,
    decode_tokens: int,
    joins: int,
    seed: int,
    with_co_load: bool = False,
    max_model_len: int = 4096,
) -> Result:
    """Measure one P/D point (``docs/pd-profiling.md``); latency_ms is the raw median. With
    ``with_co_load`` the other engine is kept busy meanwhile (``co_load``), except for
    the report-only ``pd_remote``."""
    if with_co_load and point.phase != "pd_remote":
        on_prefill = point.phase != "pd_save"
        url = prefill_url if on_prefill else decode_url
        async with co_load(session, url, model, on_prefill, 7_000_000 + _seed(point, seed)):
            return await measure_pd(
                session, prefill_url, decode_url, model, point, repeats=repeats,
                decode_tokens=decode_tokens, joins=joins, seed=seed,
                max_model_len=max_model_len,
            )  # fmt: skip
    base = _seed(point, seed)
    if point.phase == "pd_save":
        plain: list[float] = []
        remote: list[float] = []
        for k in range(repeats):  # alternate, so drift and load hit both alike
            for j, (params, out) in enumerate(((None, plain),
                                               ({"do_remote_decode": True}, remote))):  # fmt: skip
                t = await timed_completion(  # a fresh prompt each: no prefix-cache hits
                    session, prefill_url, model, point.tokens, 1, base + 2 * k + j,
                    kv_transfer_params=params,
                )  # fmt: skip
                out.append(t.ttft_ms)
        extra = max(0.0, statistics.median(remote) - statistics.median(plain))
        return Result(point.phase, 1, point.tokens, extra, len(remote))
    if point.phase == "pd_remote":
        got = []
        for k in range(repeats):
            _, params = await prefill_handoff(session, prefill_url, model, point.tokens, base + k)
            t = await timed_completion(
                session, decode_url, model, point.tokens, 2, base + k, kv_transfer_params=params
            )
            got.append(t.ttft_ms)
        return Result(point.phase, 1, point.tokens, statistics.median(got), len(got))
    if point.phase == "decode_pd":
        r = await measure(
            session, decode_url, model, Point("decode", point.batch, point.tokens),
            repeats=repeats, decode_tokens=decode_tokens, seed=seed,
        )  # fmt: skip
        return Result(point.phase, r.batch, r.tokens, r.latency_ms, r.samples)
    if point.phase != "pd_join":
        raise ValueError(f"not a P/D point: {point}")
    per_join: list[float] = []
    why: list[str] = []
    tokens = decode_tokens
    for k in range(3 * repeats):
        if len(per_join) == repeats:
            break
        stretch, reason, overrun = await _join_round(
            session, prefill_url, decode_url, model, point, joins=joins,
            decode_tokens=tokens, seed=base + k * 10_000,
        )  # fmt: skip
        if stretch is not None:
            per_join.append(stretch)
            continue
        why.append(reason)
        if reason == ENDED_EARLY:
            # a fast engine (or slow /metrics on a loaded host) let the background streams
            # end before the joins landed: size the next round's streams from this one
            # rather than fail the whole profile
            grown = math.ceil(tokens * max(2.0, overrun * GROWTH_MARGIN))
            tokens = min(grown, max_model_len - BG_PROMPT_TOKENS - 1)
    if not per_join:
        raise RuntimeError(
            f"P/D point {point.key}: no join landed inside the background streams "
            f"({'; '.join(why)}); raise --decode-tokens"
        )
    return Result(point.phase, point.batch, point.tokens, statistics.median(per_join),
                  len(per_join))  # fmt: skip


@dataclass(frozen=True, slots=True)
class PDTerms:
    """What the P/D points say against the base profile."""

    kv_save_rows: list[tuple[int, int, float]]  # (batch, prompt tokens, extra ms)
    kv_load_rows: list[tuple[int, int, float]]  # (co-running batch, prompt tokens, extra ms)
    decode_ratios: list[tuple[int, int, float]]  # (batch, context, measured / base)
    remote_ttft: list[tuple[int, float]]  # (prompt tokens, idle decode-side TTFT ms)

    @property
    def decode_scale(self) -> float:
        return statistics.median(r for _, _, r in self.decode_ratios) if self.decode_ratios else 1.0


def pd_terms(results: Iterable[Result], base: Profile) -> PDTerms:
    save, load, ratios, remote = [], [], [], []
    for r in sorted(results, key=lambda r: (r.phase, r.batch, r.tokens)):
        if r.phase == "pd_save":
            save.append((1, r.tokens, r.latency_ms))
        elif r.phase == "pd_prefill":  # points files of the first version
            save.append((1, r.tokens, r.latency_ms - base.prefill_ms(r.tokens)))
        elif r.phase == "pd_join":
            load.append((r.batch, r.tokens, r.latency_ms))
        elif r.phase == "decode_pd":
            ratios.append((r.batch, r.tokens, r.latency_ms / base.decode_ms(r.batch, r.tokens)))
        elif r.phase == "pd_remote":
            remote.append((r.tokens, r.latency_ms))
    return PDTerms(save, load, ratios, remote)


def pd_profile_text(base_text: str, terms: PDTerms, meta: Mapping[str, str]) -> str:
    """The base profile's text with ``meta`` set in its header line (``name``,
    ``decode_scale``...) and the ``kv_save`` / ``kv_load`` rows appended in its dialect."""
    lines = [
        ln
        for ln in base_text.rstrip("\n").split("\n")
        if not ln.startswith(("kv_save,", "kv_load,"))  # a base with terms: the new rows win
    ]
    head_i = next((i for i, ln in enumerate(lines) if ln.startswith("# slaplane-profile")), None)
    if head_i is None:
        lines.insert(0, "# slaplane-profile")
        head_i = 0
    parts = lines[head_i].split()
    drop = {*meta, *_DECLARED_TERMS}  # the measured rows replace any declared term
    kv = [p for p in parts[2:] if "=" in p and p.split("=", 1)[0] not in drop]
    lines[head_i] = " ".join([*parts[:2], *kv, *(f"{k}={v}" for k, v in meta.items())])
    columns = next(ln for ln in lines if ln and not ln.startswith("#"))
    five = columns.startswith("kind,")  # aiconfigurator dialect has a prefix_cached column
    for kind, rows in (("kv_save", terms.kv_save_rows), ("kv_load", terms.kv_load_rows)):
        for b, n, ms in rows:
            lines.append(f"{kind},{b},{n},0,{ms:.3f}" if five else f"{kind},{b},{n},{ms:.3f}")
    return "\n".join(lines) + "\n"


def write_pd_profile(
    path: Path, base_text: str, terms: PDTerms, meta: Mapping[str, str]
) -> Profile:
    """Write the P/D profile and parse it back (an unreadable file is an error now)."""
    text = pd_profile_text(base_text, terms, meta)
    prof = parse_profile(text, name=meta.get("name", path.stem))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return prof


async def run_pd_plan(
    prefill_url: str,
    decode_url: str,
    model: str | None,
    plan: list[Point],
    ckpt: Checkpoint,
    *,
    repeats: int,
    decode_tokens: int,
    joins: int,
    timeout_s: float,
    console: Console,
    quiet: bool = False,
    seed: int = 0,
    with_co_load: bool = False,
    max_model_len: int = 4096,
) -> str:
    """Measure every P/D point not in the checkpoint (progress bar as ``run_plan``)."""
    p_url, d_url = prefill_url.rstrip("/"), decode_url.rstrip("/")
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        # drop pooled connections before the server's 5 s keep-alive does: reusing one it
        # just closed fails with ServerDisconnected between long pd_join rounds
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=2.0),
    ) as session:
        model_id = model or await discover_model(session, d_url)

        async def one(p: Point) -> Result:
            return await measure_pd(
                session, p_url, d_url, model_id, p, repeats=repeats,
                decode_tokens=decode_tokens, joins=joins, seed=seed, with_co_load=with_co_load,
                max_model_len=max_model_len,
            )  # fmt: skip

        await measure_points(plan, ckpt, one, label="P/D profiling", console=console, quiet=quiet)
    return model_id
