"""Per-worker circuit breaker: open after consecutive failures, closed again by a probe.

The gateway's prober calls ``probe_due`` and, on a healthy ``/health``, ``success``;
routing treats open workers as unavailable (a soft filter: if every worker is open
the health filter falls back to all of them, which is itself a probe).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _State:
    failures: int = 0
    open_until_s: float = 0.0
    is_open: bool = False


class CircuitBreakers:
    def __init__(self, failures: int = 3, cooldown_s: float = 2.0) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._w: dict[str, _State] = {}
        self.open: frozenset[str] = frozenset()

    def failure(self, worker: str, now_s: float) -> bool:
        """Count a failure; True when this one opened the breaker."""
        st = self._w.setdefault(worker, _State())
        st.failures += 1
        st.open_until_s = now_s + self.cooldown_s
        if st.failures >= self.threshold and not st.is_open:
            st.is_open = True
            self.open = self.open | {worker}
            return True
        return False

    def success(self, worker: str) -> bool:
        """Reset; True when this closed an open breaker."""
        st = self._w.get(worker)
        if st is None:
            return False
        was = st.is_open
        st.failures, st.is_open = 0, False
        if was:
            self.open = self.open - {worker}
        return was

    def probe_due(self, now_s: float) -> list[str]:
        return [w for w in self.open if self._w[w].open_until_s <= now_s]

    def probed_bad(self, worker: str, now_s: float) -> None:
        st = self._w.get(worker)
        if st is not None:
            st.open_until_s = now_s + self.cooldown_s
