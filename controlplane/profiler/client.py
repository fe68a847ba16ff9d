"""Timed streaming completions against an OpenAI-compatible endpoint (vLLM or sim).

Prompts are token-id lists (``/v1/completions`` accepts them in vLLM and the sim),
so a point's prompt length is exact without a tokenizer; ids are drawn from a
per-request seed so no two prompts share a prefix and the prefix cache never
flatters a measurement. ``ignore_eos`` makes every request generate exactly
``max_tokens`` tokens.

Token times are kept as (wall time, cumulative tokens) pairs rather than gaps
between chunks: a real vLLM API server on a busy CPU merges tokens into one SSE
chunk, and TCP coalesces chunks into one read, so per-chunk gaps are a mix of
~0 and ~2x the step time (their median was 0.005 ms against the real tiny vLLM).
Worse, when the API server process is starved (other load on the box) a whole
stream can arrive in one burst at its end, so no client-side gap measures a step.
Decode step time is therefore taken differentially from stream *end* times (see
``measure.py``). ``continuous_usage_stats`` gives the token count of every chunk
where the server supports it (vLLM); otherwise one chunk counts as one token (the sim).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

_ID_LO, _ID_HI = 100, 1000
"""Token ids used in prompts: inside any real vocabulary, away from special tokens."""


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """One request: time to first token, and when each chunk arrived (perf_counter
    seconds) with the stream's cumulative output tokens at that chunk."""

    ttft_ms: float
    start_s: float = 0.0
    stamps_s: tuple[float, ...] = ()
    tokens: tuple[int, ...] = ()

    def itl_between_ms(self, start_s: float, end_s: float) -> tuple[float, int] | None:
        """(mean inter-token ms, tokens) over the chunks inside [start_s, end_s]:
        time from the first to the last such chunk over the tokens between them."""
        idx = [i for i, t in enumerate(self.stamps_s) if start_s <= t <= end_s]
        if len(idx) < 2:
            return None
        a, b = idx[0], idx[-1]
        n = self.tokens[b] - self.tokens[a]
        if n < 1:
            return None
        return (self.stamps_s[b] - self.stamps_s[a]) * 1000.0 / n, n

    @property
    def end_s(self) -> float:
        """When the last token arrived."""
        return self.stamps_s[-1] if self.stamps_s else self.start_s

    def steady_itl_ms(self) -> float | None:
        """Mean inter-token time over the second half of the stream's tokens."""
        if len(self.tokens) < 2:
            return None
        half = self.tokens[-1] / 2.0
        mid = next(i for i, n in enumerate(self.tokens) if n >= half)
        got = self.itl_between_ms(self.stamps_s[min(mid, len(self.tokens) - 2)], self.stamps_s[-1])
        return None if got is None else got[0]


def prompt_ids(tokens: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(_ID_LO, _ID_HI) for _ in range(tokens)]


async def discover_model(session: aiohttp.ClientSession, base_url: str) -> str:
    async with session.get(f"{base_url}/v1/models") as r:
        r.raise_for_status()
        data = await r.json()
    return str(data["data"][0]["id"])


async def timed_completion(
    session: aiohttp.ClientSession,
    base_url: str,
    model: str,
    prompt_tokens: int,
    max_tokens: int,
    seed: int,
    *,
    kv_transfer_params: dict[str, Any] | None = None,
    on_first: Callable[[], None] | None = None,
) -> StreamTiming:
    """Stream one completion of a fresh ``prompt_tokens``-token prompt (the same ids for
    the same ``seed``). ``kv_transfer_params`` go into the body as is (P/D);
    ``on_first`` is called when the first token arrives."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt_ids(prompt_tokens, seed),
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    if kv_transfer_params is not None:
        body["kv_transfer_params"] = kv_transfer_params
    t0 = time.perf_counter()
    stamps: list[float] = []
    tokens: list[int] = []
    async with session.post(f"{base_url}/v1/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:300]}")
        async for raw in r.content:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            chunk = json.loads(payload)
            if not chunk.get("choices"):  # the final usage-only chunk
                continue
            usage = chunk.get("usage") or {}
            n = usage.get("completion_tokens")
            stamps.append(time.perf_counter())
            tokens.append(int(n) if isinstance(n, int) else len(tokens) + 1)
            if on_first is not None and len(stamps) == 1:
                on_first()
    if not stamps:
        raise RuntimeError("stream produced no tokens")
    return StreamTiming((stamps[0] - t0) * 1000.0, t0, tuple(stamps), tuple(tokens))


async def prefill_handoff(
    session: aiohttp.ClientSession, base_url: str, model: str, prompt_tokens: int, seed: int
) -> tuple[float, dict[str, Any] | None]:
    """P/D step 1 as the gateway does it: ``max_tokens=1``, ``do_remote_decode``, not
    streamed; (ms until the response, the ``kv_transfer_params`` for the decode worker —
    ``None`` with vLLM's ExampleConnector, which finds the KV by prompt hash)."""
    body = {
        "model": model,
        "prompt": prompt_ids(prompt_tokens, seed),
        "max_tokens": 1,
        "stream": False,
        "ignore_eos": True,
        "temperature": 0.0,
        "kv_transfer_params": {"do_remote_decode": True},
    }
    t0 = time.perf_counter()
    async with session.post(f"{base_url}/v1/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:300]}")
        data = await r.json()
    params = data.get("kv_transfer_params")
    return (time.perf_counter() - t0) * 1000.0, params if isinstance(params, dict) else None
