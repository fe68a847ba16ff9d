"""Drives the pure engine on the real clock and fans its tokens out to HTTP handlers.

Engine time is ``(monotonic - t0) * time_scale``: with ``time_scale`` 10 a step the
profile says takes 20 ms is over after 2 ms of wall time, so tests run fast while
the engine (and /metrics) still reports profile-true durations. Each step's
effects are delivered when its end time is reached, one queue per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from workers.sim.engine import Engine
from workers.sim.types import FinishedRequest, SimRequest, StepResult

_MAX_CATCH_UP_S = 0.05
"""Engine time the runner may start a step in the past to absorb event-loop wake-up lag."""

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TokenEvent:
    """``count`` new tokens, or (``finished`` set) the end of the request."""

    count: int = 0
    finished: FinishedRequest | None = None


@dataclass(slots=True)
class RequestStream:
    request_id: str
    queue: asyncio.Queue[TokenEvent] = field(default_factory=asyncio.Queue)


class EngineRunner:
    """Owns the engine loop task; handlers ``submit`` requests and read their stream."""

    def __init__(
        self,
        engine: Engine,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.engine = engine
        self.time_scale = time_scale
        self._clock = clock
        self._t0 = clock()
        self._streams: dict[str, RequestStream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def now_s(self) -> float:
        """Engine (simulated) time."""
        return (self._clock() - self._t0) * self.time_scale

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="sim-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def submit(self, req: SimRequest) -> RequestStream:
        """Queue a request now; raises ValueError if the engine refuses it."""
        self.engine.add_request(req, self.now_s())
        stream = RequestStream(req.request_id)
        self._streams[req.request_id] = stream
        self._wake.set()
        return stream

    def abort(self, request_id: str) -> None:
        """Client went away: free its KV; nothing more is delivered."""
        self._streams.pop(request_id, None)
        if self.engine.abort(request_id, self.now_s()) is not None:
            self._wake.set()

    async def _loop(self) -> None:
        eng = self.engine
        while True:
            self._wake.clear()
            now = self.now_s()
            nxt = eng.next_event_s()
            if nxt is not None and 0.0 < now - nxt <= _MAX_CATCH_UP_S:
                # The engine was busy until ``nxt`` and the event loop woke late: a real
                # GPU runs the next step back to back, so start it there, not at wake-up.
                now = nxt
            try:
                res = eng.step(now)
            except Exception:  # a model bug must not kill the server silently
                log.exception("engine step failed")
                raise
            if res is None:
                nxt = eng.next_event_s()
                timeout = None if nxt is None else max(0.0, (nxt - now) / self.time_scale)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            delay = (res.end_s - self.now_s()) / self.time_scale
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # let handlers run even when the engine lags
            self._dispatch(res)

    def _dispatch(self, res: StepResult) -> None:
        streams = self._streams
        for rid in res.tokens:
            s = streams.get(rid)
            if s is not None:
                s.queue.put_nowait(TokenEvent(count=res.num_steps))
        for fin in res.finished:
            s = streams.pop(fin.request_id, None)
            if s is not None:
                s.queue.put_nowait(TokenEvent(finished=fin))
