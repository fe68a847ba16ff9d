"""The response relay: the worker's bytes to the client, unchanged, measured as they go.

Streamed responses are written chunk by chunk before they are scanned (``relay.py``'s
``SseScanner`` finds content events and usage), so measuring never delays the client;
the first content token releases the request's pending prefill in the ledger. A worker
that fails or closes early mid-stream gets an SSE error event and a clean end, never a
hung stream; a client that goes away aborts the upstream. Every exit releases the
request in the gate and judges it exactly once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web

from controlplane.errors import UpstreamError
from controlplane.gateway.admit import AdmissionGate
from controlplane.gateway.parse import ParsedRequest
from controlplane.gateway.relay import SseScanner, Timings, error_event, scan_json_response
from controlplane.gateway.serve import Outcome, RequestJudge
from controlplane.gateway.upstream import UpstreamStream


class _SseResponse(web.StreamResponse):
    """A stream whose headers go out with its first chunk (one write, one packet) instead
    of on ``prepare``: the relay prepares only once the first upstream chunk is in hand,
    so a separate header write would only add a syscall to every request's TTFT."""

    _send_headers_immediately = False


class StreamRelay:
    def __init__(self, gate: AdmissionGate, judge: RequestJudge) -> None:
        self.gate = gate
        self.judge = judge

    async def respond(
        self,
        request: web.Request,
        pr: ParsedRequest,
        up: UpstreamStream,
        it: AsyncIterator[bytes],
        first: bytes,
        t: Timings,
        out: Outcome,
    ) -> web.StreamResponse:
        if not pr.stream:
            return await self._whole(request, up, it, first, t, out)
        sresp = _SseResponse(
            status=up.status,
            headers={"Content-Type": up.content_type, "Cache-Control": "no-cache"},
        )
        await sresp.prepare(request)
        scan = SseScanner(t)
        outcome = "ok"
        chunk = first
        pending_first = True
        try:
            while True:
                if chunk:
                    try:  # write first: scanning must not delay the client's bytes
                        await sresp.write(chunk)
                    except (ConnectionResetError, RuntimeError):
                        outcome = "cancelled"  # client went away: abort upstream (caller closes)
                        break
                    sent = time.perf_counter()
                    n = scan.feed(chunk)
                    if n:
                        scan.mark(n, sent)
                        if pending_first:
                            pending_first = False
                            self.gate.first_token(out.request_id)
                try:
                    chunk = await it.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    outcome = "error"
                    await _safe_write(
                        sresp, error_event(f"worker failed mid-stream: {exc.__class__.__name__}")
                    )
                    break
            if outcome == "ok" and not t.done_seen:
                outcome = "error"
                await _safe_write(sresp, error_event("worker closed the stream early"))
            if outcome != "cancelled":
                try:
                    await sresp.write_eof()
                except (ConnectionResetError, RuntimeError):
                    outcome = "cancelled"
        finally:
            self.gate.release(out.request_id)
            self.judge.finish(out, t, outcome)
        return sresp

    async def _whole(
        self,
        request: web.Request,
        up: UpstreamStream,
        it: AsyncIterator[bytes],
        first: bytes,
        t: Timings,
        out: Outcome,
    ) -> web.StreamResponse:
        chunks = [first]
        try:
            async for c in it:
                chunks.append(c)
        except Exception as exc:
            raise UpstreamError(
                f"worker {out.decode_worker} failed: {exc!r}", retryable=False
            ) from exc
        raw = b"".join(chunks)
        resp = web.Response(status=up.status, body=raw, content_type="application/json")
        await resp.prepare(request)
        await resp.write_eof()
        scan_json_response(t, raw, time.perf_counter())
        self.gate.release(out.request_id)
        self.judge.finish(out, t, "ok")
        return resp


async def _safe_write(resp: web.StreamResponse, data: bytes) -> None:
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await resp.write(data)
