"""Leader election over ``Store.acquire_lease`` (SET NX PX, renewed by the holder).

Leadership is trusted only until ``sent + ttl x safety`` on this process's
monotonic clock, where ``sent`` is when the renewing call was *sent*: if Redis or
the network stalls, this controller stops acting before any standby could have
taken the lease, so two leaders never act at once. A store error ends leadership
immediately (never act on stale state).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from controlplane.state.store import Store, StoreUnavailable

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(
        self,
        store: Store,
        cluster: str,
        holder: str,
        ttl_ms: int = 5000,
        safety: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.holder = holder
        self.ttl_ms = ttl_ms
        self.safety = safety
        self.clock = clock
        self._valid_until = 0.0
        self.store_up = False
        self.transitions = 0

    @property
    def renew_every_s(self) -> float:
        return self.ttl_ms / 1000.0 / 3.0

    def is_leader(self) -> bool:
        return self.clock() < self._valid_until

    async def renew(self) -> bool:
        """Take or renew the lease; returns whether this process leads now."""
        was = self.is_leader()
        sent = self.clock()
        try:
            ok = await self.store.acquire_lease(self.cluster, self.holder, self.ttl_ms)
            self.store_up = True
        except StoreUnavailable:
            self.store_up = False
            ok = False
        self._valid_until = sent + self.ttl_ms / 1000.0 * self.safety if ok else 0.0
        if ok != was:
            self.transitions += 1
            log.warning(
                "leadership %s", "acquired" if ok else "lost",
                extra={"holder": self.holder, "cluster": self.cluster, "store_up": self.store_up},
            )  # fmt: skip
        return ok

    def lost(self) -> None:
        """Stop trusting the lease now (e.g. a store call failed mid-reconcile)."""
        if self.is_leader():
            self.transitions += 1
            log.warning("leadership dropped: store unavailable", extra={"holder": self.holder})
        self._valid_until = 0.0
        self.store_up = False

    async def release(self) -> None:
        self._valid_until = 0.0
        with contextlib.suppress(StoreUnavailable):
            await self.store.release_lease(self.cluster, self.holder)
