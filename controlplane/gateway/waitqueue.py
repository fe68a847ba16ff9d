"""The gateway's admission queue: held requests wake when capacity may have freed,
best priority first.

Polling every few ms wasted CPU and let whichever sleeper happened to wake first
take freed capacity. Instead each held request waits on its own future in a heap
ordered by (priority rank desc, arrival); ``wake`` (a request finished, a first
token freed prefill, telemetry arrived) resolves only the best one, which rechecks
admission and, once admitted, passes the wake on so a larger drain releases several
in order. A periodic recheck (``poll_s``) covers capacity nobody signalled, and a
request woken that way still yields to any better-ranked one still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable


class WaitQueue:
    def __init__(self, poll_s: float = 0.05, clock: Callable[[], float] = time.time) -> None:
        self.poll_s = poll_s
        self.clock = clock
        """The clock hold deadlines are on (the gateway's request-path clock)."""
        self._heap: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self._pushes = 0  # tie-break: a ticket re-queued beside its own cancelled entry
        self._seq = 0
        self.woken = 0
        """Waiters resolved by ``wake`` that have not resumed yet (0 or 1)."""

    def __len__(self) -> int:
        return sum(1 for *_, f in self._heap if not f.done())

    def ticket(self, rank: int) -> tuple[int, int]:
        """A place in line, kept across rechecks so a request never loses its turn."""
        self._seq += 1
        return (-rank, self._seq)

    def first(self) -> tuple[int, int] | None:
        """The best waiting ticket (pending futures only)."""
        self._prune()
        return (self._heap[0][0], self._heap[0][1]) if self._heap else None

    async def wait(self, ticket: tuple[int, int], deadline: float) -> None:
        """Until woken, ``deadline`` (on ``clock``) has passed, or a ``poll_s`` recheck
        finds no better ticket queued (priority order)."""
        loop = asyncio.get_running_loop()
        polled_at = loop.time()
        while True:
            left = deadline - self.clock()
            if left <= 0:
                return
            fut: asyncio.Future[None] = loop.create_future()
            self._pushes += 1
            heapq.heappush(self._heap, (ticket[0], ticket[1], self._pushes, fut))
            try:
                await asyncio.wait_for(asyncio.shield(fut), min(left, self.poll_s))
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():  # woken, then cancelled: pass it on
                    self.woken -= 1
                    self.wake()
                raise
            finally:
                if not fut.done():
                    fut.cancel()  # a cancelled entry is skipped by wake and pruned
            if fut.done() and not fut.cancelled():
                self.woken -= 1
                return  # woken on purpose: it is this ticket's turn
            if loop.time() - polled_at < self.poll_s:
                continue  # a deadline timer, not the poll: the loop checks the deadline
            polled_at = loop.time()
            best = self.first()
            if best is None or best >= ticket:
                return

    def wake(self) -> bool:
        """Resolve the best pending waiter; False when nobody waits. Wakes coalesce: while
        a woken waiter has not rechecked yet, another wake adds nothing (its recheck sees
        the newest state), so held requests go strictly best first, head of line, as the
        replay driver releases them."""
        if self.woken:
            return True
        while self._heap:
            *_, fut = heapq.heappop(self._heap)
            if not fut.done():
                fut.set_result(None)
                self.woken += 1
                return True
        return False

    def _prune(self) -> None:
        heap = self._heap
        while heap and heap[0][3].done():
            heapq.heappop(heap)

    def close(self) -> None:
        for *_, f in self._heap:
            with contextlib.suppress(asyncio.InvalidStateError):
                f.cancel()
        self._heap.clear()
        self.woken = 0
