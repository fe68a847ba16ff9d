"""Relay of a worker's response to the client, byte for byte, measuring as it goes.

Upstream bytes are written unchanged; a light SSE scan beside the relay finds the
events that carry content (for TTFT and inter-token gaps) and the usage chunk.
The gateway's TTFT is taken right after the first content byte is written to the
client, so it includes everything the client waits for except its own network.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

DONE = b"data: [DONE]"


@dataclass(slots=True)
class Timings:
    """Per-request measurements (perf_counter seconds) and token counts."""

    t0: float
    first_token_s: float | None = None
    last_token_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    content_events: int = 0
    usage_completion_tokens: int | None = None
    usage_prompt_tokens: int | None = None
    cached_tokens: int | None = None
    done_seen: bool = False
    end_s: float | None = None
    upstream_s: float | None = None
    """When the request whose response is relayed was sent upstream (the decode one in P/D)."""
    streamed: bool = True

    @property
    def output_tokens(self) -> int:
        return (
            self.usage_completion_tokens
            if self.usage_completion_tokens is not None
            else self.content_events
        )

    def tpot_s(self) -> float | None:
        """Streamed: first to last token over the gaps between them (``vllm bench`` TPOT).
        Non-streamed (every token arrives at once): the generation time, upstream send to
        response, over the completion tokens, which that interval spans the making of.
        None under two tokens (no inter-token time)."""
        n = self.output_tokens
        if self.last_token_s is None or n < 2:
            return None
        if not self.streamed:
            return None if self.upstream_s is None else (self.last_token_s - self.upstream_s) / n
        if self.first_token_s is None:
            return None
        return (self.last_token_s - self.first_token_s) / (n - 1)


def _has_content(choice: dict[str, Any]) -> bool:
    text = choice.get("text")
    if text:
        return True
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(
            delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls")
        )
    return False


def _usage(t: Timings, obj: dict[str, Any]) -> None:
    usage = obj.get("usage")
    if isinstance(usage, dict):
        ct = usage.get("completion_tokens")
        if isinstance(ct, int):
            t.usage_completion_tokens = ct
        pt = usage.get("prompt_tokens")
        if isinstance(pt, int):
            t.usage_prompt_tokens = pt
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            t.cached_tokens = details["cached_tokens"]


class SseScanner:
    """Incremental SSE event splitter counting content events per network chunk."""

    __slots__ = ("_buf", "t")

    def __init__(self, timings: Timings) -> None:
        self._buf = b""
        self.t = timings

    def feed(self, chunk: bytes) -> int:
        """Scan one chunk; returns how many content events completed in it."""
        buf = self._buf + chunk if self._buf else chunk
        n = 0
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            ev = buf[start:end]
            start = end + 2
            if not ev.startswith(b"data:"):
                continue
            payload = ev[5:].strip()
            if payload == b"[DONE]":
                self.t.done_seen = True
                continue
            try:
                obj = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            choices = obj.get("choices")
            if isinstance(choices, list) and any(
                isinstance(c, dict) and _has_content(c) for c in choices
            ):
                n += 1
            if obj.get("usage"):
                _usage(self.t, obj)
        self._buf = buf[start:]
        return n

    def mark(self, n_content: int, now: float | None = None) -> None:
        """Record that ``n_content`` content events reached the client (at ``now``,
        perf_counter seconds; default: now)."""
        if n_content <= 0:
            return
        if now is None:
            now = time.perf_counter()
        t = self.t
        if t.first_token_s is None:
            t.first_token_s = now
        elif t.last_token_s is not None:
            t.gaps_s.append(now - t.last_token_s)
        # Tokens that reached the client in one write had no gap between them: count
        # each, as vLLM's own inter-token histogram does, so bursts are not hidden.
        t.gaps_s.extend([0.0] * (n_content - 1))
        t.last_token_s = now
        t.content_events += n_content


def scan_json_response(t: Timings, raw: bytes, now: float) -> None:
    """Counts and timings for a non-streamed response (one JSON object) that reached the
    client at ``now`` (perf_counter seconds): every token arrives then, so TTFT is the
    whole wait and TPOT the generation time per token (``Timings.tpot_s``)."""
    t.streamed = False
    t.first_token_s = t.last_token_s = now
    try:
        obj = json.loads(raw)
    except ValueError:
        return
    if isinstance(obj, dict):
        _usage(t, obj)
        choices = obj.get("choices")
        if isinstance(choices, list) and t.usage_completion_tokens is None:
            t.content_events = len(choices)


def error_event(message: str, code: int = 502, etype: str = "upstream_error") -> bytes:
    """An SSE error event followed by [DONE], so clients end cleanly instead of hanging."""
    body = json.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})
    return b"data: " + body.encode() + b"\n\n" + DONE + b"\n\n"
