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


class WaitQueue:
    def __init__(self, poll_s: float = 0.05) -> None:
        self.poll_s = poll_s
        self._heap: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self._pushes = 0  # tie-break: a ticket re-queued beside its own cancelled entry
        self._seq = 0

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

    async def wait(self, ticket: tuple[int, int], timeout_s: float) -> None:
        """Until woken or ``min(timeout_s, poll_s)``; on a poll wake-up, keep waiting
        while a better ticket is queued (priority order), within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            self._pushes += 1
            heapq.heappush(self._heap, (ticket[0], ticket[1], self._pushes, fut))
            left = deadline - loop.time()
            try:
                await asyncio.wait_for(asyncio.shield(fut), min(left, self.poll_s))
                return  # woken on purpose: it is this ticket's turn
            except TimeoutError:
                pass
            finally:
                if not fut.done():
                    fut.cancel()  # a cancelled entry is skipped by wake and pruned
            best = self.first()
            if best is None or best >= ticket or loop.time() >= deadline:
                return

    def wake(self) -> bool:
        """Resolve the best pending waiter; False when nobody waits."""
        while self._heap:
            *_, fut = heapq.heappop(self._heap)
            if not fut.done():
                fut.set_result(None)
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
