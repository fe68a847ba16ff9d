"""The request ledger: what a driver has in flight, one bookkeeping for gateway and replay.

Routing and admission price a worker by what telemetry says *and* by what the driver
itself has sent there since (telemetry lags by a publish interval). Both drivers used to
keep those counters by hand and drifted (different events, different token counts), so
the same trace was judged differently live and in replay. The ledger owns them; drivers
only report lifecycle events:

``dispatch`` (sent on a route) → [``started``] → ``prefill_done`` (P/D: the prefill
worker is finished with it) → ``first_token`` → ``finish`` (any end: done, failed,
displaced, client gone).
``hold``/``unhold`` track the admission queue. Every transition is idempotent and
``finish`` releases whatever is left, so a driver can call it from every exit path.

Counters, by event:
- ``inflight[w]``: +1 on every worker of the route at dispatch; the prefill worker's
  comes back at ``prefill_done``, the decode worker's at ``finish``.
- ``pending_prefill_tokens[w]``: the uncached prompt tokens on the route's first worker
  from dispatch until that worker is done with the prompt (``prefill_done`` in P/D, the
  first token in one hop).
- ``waiting_by_rank[r]``: admitted requests of ``Priority.rank`` r before their first
  token.
- unstarted (``unstarted(worker, now)``): requests on their first worker predicted not to
  have begun prefill (the queue seen ahead at dispatch has not drained), the candidates
  displacement may refuse. A driver cannot see inside a worker's queue, so both use
  the same estimate.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from controlplane.policy.request.admission.displace import QueuedRequest
from controlplane.policy.types import RouteDecision


@dataclass(slots=True)
class LedgerEntry:
    request_id: str
    rank: int
    held_since_s: float | None = None
    deadline_s: float | None = None
    route: RouteDecision | None = None
    first: str = ""
    """The worker the request is on first (prefill worker in P/D)."""
    uncached: int = 0
    dispatched_s: float = 0.0
    start_after_s: float = 0.0
    """Predicted start of its prefill on ``first`` (dispatch time + queue drain)."""
    on_prefill: bool = False
    """Counted in ``inflight``/``pending_prefill_tokens`` of the prefill worker."""
    on_decode: bool = False
    """Counted in ``inflight`` of the decode worker."""
    pending: str = ""
    """Worker whose ``pending_prefill_tokens`` hold ``uncached`` ('' = none)."""
    waiting: bool = False
    """Counted in ``waiting_by_rank``."""
    _held_key: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self._held_key is not None


class RequestLedger:
    def __init__(self) -> None:
        self.inflight: dict[str, int] = {}
        self.pending_prefill_tokens: dict[str, int] = {}
        self.waiting_by_rank: dict[int, int] = {}
        self._entries: dict[str, LedgerEntry] = {}
        self._held: list[tuple[int, int, str]] = []
        """Heap of (-rank, seq, request id); entries no longer held are skipped lazily."""
        self._held_n = 0
        self._seq = 0
        self._by_worker: dict[str, dict[str, LedgerEntry]] = {}
        """First worker → unstarted-candidate entries on it."""

    # --- reads -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request_id: str) -> LedgerEntry | None:
        return self._entries.get(request_id)

    @property
    def held_count(self) -> int:
        return self._held_n

    def best_held(self) -> str | None:
        """The held request to re-judge first: best priority, then earliest held."""
        heap = self._held
        while heap:
            _, seq, rid = heap[0]
            e = self._entries.get(rid)
            if e is not None and e._held_key is not None and e._held_key[1] == seq:
                return rid
            heapq.heappop(heap)
        return None

    def expired(self, now_s: float) -> list[str]:
        """Held requests whose hold deadline has passed, oldest first."""
        out = [
            e
            for e in self._entries.values()
            if e._held_key is not None and e.deadline_s is not None and e.deadline_s <= now_s
        ]
        return [e.request_id for e in sorted(out, key=lambda e: e._held_key or (0, 0))]

    def unstarted(
        self,
        worker: str,
        now_s: float,
        reported_waiting: int | None = None,
        reported_at_s: float = 0.0,
    ) -> list[QueuedRequest]:
        """Requests on ``worker`` predicted not to have started by ``now_s``.

        Two estimates must agree: the queue seen ahead at dispatch has not drained yet
        (``start_after_s``, conservative: the queue's head is partly done) and the
        request is among the newest that the worker's own report can still hold
        waiting (engines serve in arrival order, so what waits is the tail): the
        ``reported_waiting`` requests the worker said wait at ``reported_at_s``, plus
        everything dispatched since. None = no report (trust the drain estimate).
        """
        entries = self._by_worker.get(worker)
        if not entries:
            return []
        cands = [e for e in entries.values() if e.start_after_s > now_s]
        if reported_waiting is not None and cands:
            cands.sort(key=lambda e: e.dispatched_s, reverse=True)
            newer = sum(1 for e in cands if e.dispatched_s > reported_at_s)
            cands = cands[: newer + max(0, reported_waiting)]
        return [QueuedRequest(e.request_id, e.rank, e.uncached) for e in cands]

    def unstarted_count(self) -> int:
        return sum(len(v) for v in self._by_worker.values())

    # --- transitions -----------------------------------------------------------
    def hold(self, request_id: str, rank: int, now_s: float, deadline_s: float) -> None:
        """Enter the admission queue (no-op when already held: it keeps its place)."""
        e = self._entry(request_id, rank)
        if e._held_key is not None:
            return
        self._seq += 1
        e._held_key = (-rank, self._seq)
        e.held_since_s = now_s
        e.deadline_s = deadline_s
        self._held_n += 1
        heapq.heappush(self._held, (-rank, self._seq, request_id))

    def unhold(self, request_id: str) -> None:
        e = self._entries.get(request_id)
        if e is not None and e._held_key is not None:
            e._held_key = None
            self._held_n -= 1

    def dispatch(
        self,
        request_id: str,
        rank: int,
        route: RouteDecision,
        uncached: int,
        now_s: float,
        start_after_s: float,
    ) -> None:
        """Sent on ``route`` (a retry re-dispatches: the earlier route is released)."""
        e = self._entry(request_id, rank)
        self.unhold(request_id)
        self._release_route(e)
        e.route, e.uncached = route, uncached
        e.dispatched_s, e.start_after_s = now_s, start_after_s
        e.first = route.prefill if route.prefill is not None else route.decode
        inflight = self.inflight
        if route.prefill is not None:
            inflight[route.prefill] = inflight.get(route.prefill, 0) + 1
            e.on_prefill = True
        inflight[route.decode] = inflight.get(route.decode, 0) + 1
        e.on_decode = True
        if uncached:
            e.pending = e.first
            self._add_pending(e.first, uncached)
        if not e.waiting:
            e.waiting = True
            self.waiting_by_rank[rank] = self.waiting_by_rank.get(rank, 0) + 1
        self._by_worker.setdefault(e.first, {})[request_id] = e

    def started(self, request_id: str) -> None:
        """Its first worker has begun on it (the gateway's first upstream byte): no longer
        a displacement candidate, whatever the estimate said."""
        e = self._entries.get(request_id)
        if e is not None:
            self._not_unstarted(e)

    def prefill_done(self, request_id: str) -> None:
        """P/D: the prefill worker has finished with the prompt (KV handed off)."""
        e = self._entries.get(request_id)
        if e is None or e.route is None or e.route.prefill is None:
            return
        self._not_unstarted(e)
        self._release_pending(e)
        if e.on_prefill:
            self.inflight[e.route.prefill] = self.inflight.get(e.route.prefill, 0) - 1
            e.on_prefill = False

    def first_token(self, request_id: str) -> None:
        e = self._entries.get(request_id)
        if e is None:
            return
        self._not_unstarted(e)
        self._release_pending(e)
        self._release_waiting(e)

    def finish(self, request_id: str) -> None:
        """Any end of the request: release everything it still holds. Idempotent."""
        self.unhold(request_id)
        e = self._entries.pop(request_id, None)
        if e is None:
            return
        self._release_route(e)
        self._release_waiting(e)

    # --- internals -------------------------------------------------------------
    def _entry(self, request_id: str, rank: int) -> LedgerEntry:
        e = self._entries.get(request_id)
        if e is None:
            e = self._entries[request_id] = LedgerEntry(request_id, rank)
        return e

    def _add_pending(self, worker: str, tokens: int) -> None:
        p = self.pending_prefill_tokens
        p[worker] = p.get(worker, 0) + tokens

    def _release_pending(self, e: LedgerEntry) -> None:
        if e.pending:
            self._add_pending(e.pending, -e.uncached)
            e.pending = ""

    def _release_waiting(self, e: LedgerEntry) -> None:
        if e.waiting:
            e.waiting = False
            self.waiting_by_rank[e.rank] = self.waiting_by_rank.get(e.rank, 0) - 1

    def _not_unstarted(self, e: LedgerEntry) -> None:
        entries = self._by_worker.get(e.first)
        if entries is not None:
            entries.pop(e.request_id, None)
            if not entries:
                del self._by_worker[e.first]

    def _release_route(self, e: LedgerEntry) -> None:
        r = e.route
        if r is None:
            return
        self._not_unstarted(e)
        self._release_pending(e)
        if e.on_prefill and r.prefill is not None:
            self.inflight[r.prefill] = self.inflight.get(r.prefill, 0) - 1
        if e.on_decode:
            self.inflight[r.decode] = self.inflight.get(r.decode, 0) - 1
        e.on_prefill = e.on_decode = False
        e.route = None
