"""Run one plan point against the endpoint (async; the CLI drives it with a progress bar).

Decode step time is measured differentially: ``b`` concurrent streams of
``decode_tokens`` tokens, then the same ``b`` prompts' lengths with a short
output, and ``(long batch end - short batch end) / (token difference)``. The
extra tokens are generated at the end, when every stream is past its prefill,
so the difference is exactly ``decode_tokens - short`` steps of a pure decode
batch of ``b`` — what a profile's ``decode_ms(b, context)`` means — while HTTP,
prefill, and any burst in how the API server delivers chunks cancel out. (On a
busy 2-core box vLLM's API server delivered whole 96-token streams within 0.5 ms
at their end, so per-chunk gaps measured nothing.)
"""

from __future__ import annotations

import asyncio
import statistics
import time
import zlib

import aiohttp

from controlplane.profiler.client import StreamTiming, timed_completion
from controlplane.profiler.plan import Point, Result


async def _batch(
    session: aiohttp.ClientSession,
    base_url: str,
    model: str,
    point: Point,
    max_tokens: int,
    seed: int,
) -> tuple[float, list[StreamTiming]]:
    """``point.batch`` concurrent streams; (seconds until the last one ended, streams)."""
    t0 = time.perf_counter()
    streams = await asyncio.gather(
        *(
            timed_completion(session, base_url, model, point.tokens, max_tokens, seed + i)
            for i in range(point.batch)
        )
    )
    return max(s.end_s for s in streams) - t0, list(streams)


def short_tokens(decode_tokens: int) -> int:
    """Output length of the reference batch: long enough that every stream has left
    prefill, short enough to leave most of ``decode_tokens`` as the measured span."""
    return max(2, decode_tokens // 4)


async def measure(
    session: aiohttp.ClientSession,
    base_url: str,
    model: str,
    point: Point,
    *,
    repeats: int,
    decode_tokens: int,
    seed: int,
) -> Result:
    """Prefill: ``repeats`` sequential single requests with ``max_tokens=1``, median TTFT.
    Decode: per round, a long and a short batch (see the module doc); median step time
    over ``repeats`` rounds."""
    base = seed * 1_000_003 + zlib.crc32(repr(point.key).encode()) % 1_000_000
    if point.phase == "prefill":
        ttfts = []
        for k in range(repeats):
            t = await timed_completion(session, base_url, model, point.tokens, 1, base + k)
            ttfts.append(t.ttft_ms)
        return Result(point.phase, 1, point.tokens, statistics.median(ttfts), len(ttfts))
    short = short_tokens(decode_tokens)
    if decode_tokens - short < 2:
        raise ValueError(f"--decode-tokens {decode_tokens} is too short to measure a step")
    steps: list[float] = []
    # A round where the long batch was not slower than the short one measured noise (a
    # stalled host), not a step: it is dropped and re-run, up to ``repeats`` extra rounds.
    for k in range(2 * repeats):
        if len(steps) == repeats:
            break
        seed_k = base + k * 1000
        long_s, _ = await _batch(session, base_url, model, point, decode_tokens, seed_k)
        short_s, _ = await _batch(session, base_url, model, point, short, seed_k + 500)
        if long_s > short_s:
            steps.append((long_s - short_s) * 1000.0 / (decode_tokens - short))
    if not steps:
        raise RuntimeError(
            f"decode point {point.key}: the long batch was never slower than the short one; "
            "the endpoint is too noisy to profile (try more --decode-tokens)"
        )
    return Result(point.phase, point.batch, point.tokens, statistics.median(steps), len(steps))
