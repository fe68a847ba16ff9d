"""Frozen inputs and outputs of the policy core, shared by the live gateway and replay.

Everything here is plain data: a driver builds a ``RouteRequest`` per request and a
``ClusterView`` over the state it already holds in memory, and gets decisions back
that carry their reason and inputs (house rule 8).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.schemas import Priority, WorkerSnapshot

STATIC_SOURCE = "static"
"""``WorkerSnapshot.source`` of workers known only from flags: no telemetry, never stale."""
PLUGIN_SOURCE = "plugin"
"""``WorkerSnapshot.source`` of the in-process vLLM stat-logger plugin, which publishes as
``<worker_id>-plugin`` beside the agent's snapshot of the same worker (same URL)."""


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What the policies know about one request before it is sent anywhere."""

    request_id: str
    tenant: str
    model: str
    prompt_tokens: int
    max_tokens: int
    priority: Priority = Priority.STANDARD
    ttft_target_ms: float = 2000.0
    itl_target_ms: float = 50.0
    block_hashes: tuple[int, ...] = ()
    """Chained hashes of the prompt's KV blocks (``policy.prefix``), for prefix affinity."""


@dataclass(slots=True)
class ClusterView:
    """The driver's in-memory picture of the cluster; routers read it and never mutate it.

    Not frozen on purpose: the gateway owns the dicts and updates them as telemetry
    and completions arrive, so building a view per request costs nothing.
    """

    workers: Mapping[str, WorkerSnapshot]
    route_weights: Mapping[str, float] = field(default_factory=dict)
    """Controller route weights (``weight:<worker>``); missing = 1.0, 0 = no new requests."""
    draining: frozenset[str] = frozenset()
    unavailable: frozenset[str] = frozenset()
    """Workers the driver itself cannot use now (open circuit breaker, excluded on retry)."""
    inflight: Mapping[str, int] = field(default_factory=dict)
    """Requests this driver has in flight on each worker (covers telemetry lag)."""
    pending_prefill_tokens: Mapping[str, int] = field(default_factory=dict)
    """Prompt tokens this driver sent to each worker that have not produced a first token."""
    stale_after_s: float = 2.0
    pools: Mapping[tuple[str, str], list[str]] = field(default_factory=dict)
    """(model, role) → sorted worker ids; see ``build_pools``. Changes only on membership."""
    version: int | None = None
    """Bumped by the driver whenever ``workers``, ``route_weights``, ``draining``,
    ``unavailable``, ``stale_after_s`` or ``pools`` change (``inflight`` and
    ``pending_prefill_tokens`` may change at any time without a bump). Routers cache
    per-worker work per version, because requests arrive far more often than
    telemetry. None = no promise: nothing is reused between calls."""


def build_pools(workers: Mapping[str, WorkerSnapshot]) -> dict[tuple[str, str], list[str]]:
    """Group workers by (model, role), ids sorted, so routing never scans the whole cluster.

    A plugin snapshot whose URL an agent (or static) snapshot in ``workers`` also has is
    a shadow of that worker, not another worker, and is left out (``pick_source``
    decides which of the two a driver should show)."""
    served = {s.url.rstrip("/") for s in workers.values() if s.source != PLUGIN_SOURCE and s.url}
    pools: dict[tuple[str, str], list[str]] = {}
    for w in sorted(workers):
        s = workers[w]
        if s.source == PLUGIN_SOURCE and s.url and s.url.rstrip("/") in served:
            continue
        pools.setdefault((s.model, s.role), []).append(w)
    return pools


def pick_source(
    group: Sequence[WorkerSnapshot], now_s: float, stale_after_s: float
) -> WorkerSnapshot | None:
    """The one snapshot to show for a worker URL that several publishers report on.

    The agent's snapshot wins while it is fresh; the plugin's is used only when no agent
    snapshot is fresh (the agent died, the engine did not), else the newest stale one
    (stale = saturated still applies). Flag-only (static) entries count only when no
    telemetry exists for the URL. The shown id stays the agent's (else the static one)
    whichever snapshot is chosen, so in-flight counts, breakers and controller route
    weights keep following one worker id.
    """
    tele = [s for s in group if s.source != STATIC_SOURCE]
    static = [s for s in group if s.source == STATIC_SOURCE]
    if not tele:
        return static[0] if static else None
    agents = [s for s in tele if s.source != PLUGIN_SOURCE]
    stale_ms = (now_s - stale_after_s) * 1000.0
    fresh = [s for s in agents if s.ts_ms >= stale_ms] or [
        s for s in tele if s.source == PLUGIN_SOURCE and s.ts_ms >= stale_ms
    ]
    chosen = max(fresh or tele, key=lambda s: s.ts_ms)
    if agents:
        name = max(agents, key=lambda s: s.ts_ms).worker
    elif static:
        name = static[0].worker
    else:
        name = chosen.worker
    return chosen if chosen.worker == name else replace(chosen, worker=name)


class Candidates(Mapping[str, WorkerSnapshot]):
    """The subset of workers a scorer sees, with the view behind them.

    A Mapping (so ``score(req, workers, now_s)`` reads naturally) that also carries
    ``view`` for the driver-side counters, without copying snapshots per request.
    """

    __slots__ = ("_ids", "columns", "view")

    def __init__(self, ids: list[str], view: ClusterView, columns: Any = None) -> None:
        self._ids = ids
        self.view = view
        self.columns = columns
        """The Profile's ``routers.columns.ColumnStore`` synced to ``view`` (None = none),
        so vectorised plugins read per-worker numbers as arrays instead of snapshots."""

    def __getitem__(self, key: str) -> WorkerSnapshot:
        if key not in self._ids:
            raise KeyError(key)
        return self.view.workers[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        return self._ids

    def items_fast(self) -> Iterator[tuple[str, WorkerSnapshot]]:
        ws = self.view.workers
        for w in self._ids:
            yield w, ws[w]


@dataclass(frozen=True, slots=True)
class PickResult:
    """One profile's choice among candidates, with the scores that made it."""

    worker: str | None
    scores: Mapping[str, float]
    fallbacks: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where a request goes. ``prefill`` is None for one-hop serving: on a ``both``
    worker (or what is left of a P/D pair: mode ``unified``) or, by the conditional
    disaggregation rule, on a decode worker that prefills the prompt itself (``local``)."""

    policy: str
    mode: str  # "pd" | "unified" | "local"
    decode: str
    prefill: str | None = None
    predicted_ttft_ms: float | None = None
    predicted_itl_ms: float | None = None
    cached_tokens: int = 0
    fallbacks: tuple[str, ...] = ()
    reason: str = ""

    def workers(self) -> tuple[str, ...]:
        return (self.decode,) if self.prefill is None else (self.prefill, self.decode)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An admission decision: admit, queue, or reject with a reason and a retry hint."""

    admitted: bool
    reason: str = "ok"
    retry_after_s: float | None = None
    queue: bool = False
    inputs: Mapping[str, Any] = field(default_factory=dict)
    displace: str | None = None
    """Admitted in place of this queued request, which the driver must refuse
    (``admission/displace.py``)."""


ADMIT = Verdict(True)
