"""Requests this gateway has sent to a worker whose prefill has not started yet: the
candidates admission may displace (``policy/admission/displace.py``), and the means to.

A worker does not say which of its waiting requests it has begun, so the gateway keeps
its own estimate: a request is unstarted until the queue the predictor saw ahead of it
at dispatch has drained (``start_after_s``) and until its first byte comes back. Each
gateway replica displaces only requests it sent itself; displacing one cancels its
handler's upstream call (the worker sees the disconnect and aborts it) and the handler
answers its client 429 ``displaced`` with Retry-After.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from controlplane.gateway.serve import Outcome
from controlplane.policy.admission import QueuedRequest


@dataclass(slots=True)
class _Entry:
    rank: int
    uncached_tokens: int
    start_after_s: float
    out: Outcome
    task: asyncio.Task[object] | None


class UnstartedRequests:
    def __init__(self) -> None:
        self._by_worker: dict[str, dict[str, _Entry]] = {}

    def add(
        self, worker: str, out: Outcome, rank: int, uncached_tokens: int, start_after_s: float
    ) -> None:
        """Register the calling task's request as waiting on ``worker``."""
        task: asyncio.Task[object] | None = asyncio.current_task()
        entry = _Entry(rank, uncached_tokens, start_after_s, out, task)
        self._by_worker.setdefault(worker, {})[out.request_id] = entry

    def remove(self, worker: str, request_id: str) -> None:
        """Its prefill is done, it failed or it left; idempotent."""
        entries = self._by_worker.get(worker)
        if entries is not None:
            entries.pop(request_id, None)

    def queued(self, worker: str, now_s: float) -> list[QueuedRequest]:
        """Requests on ``worker`` predicted not to have started by ``now_s``."""
        entries = self._by_worker.get(worker)
        if not entries:
            return []
        return [
            QueuedRequest(rid, e.rank, e.uncached_tokens)
            for rid, e in entries.items()
            if e.start_after_s > now_s
        ]

    def displace(self, worker: str, request_id: str, retry_after_s: float) -> bool:
        """Refuse a registered request in favour of another; False if it is gone."""
        entries = self._by_worker.get(worker)
        e = None if entries is None else entries.pop(request_id, None)
        if e is None or e.task is None or e.task.done():
            return False
        e.out.displaced_retry_s = retry_after_s
        e.task.cancel()
        return True

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_worker.values())
