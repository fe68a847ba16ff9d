"""The replayed cluster: engine instances with roles, and the telemetry they publish.

Each worker is a ``workers.sim.Engine`` in a ``Slot`` that remembers when it came
up and went away (GPU-seconds) and whether its in-flight step is pending. The
snapshot it publishes carries exactly the fields the live agent derives from
vLLM's /metrics (kv usage, running, waiting, waiting tokens, KV capacity), so the
policies see in replay what they see live; ``publish_interval_s`` makes it as
stale as a real scrape loop would.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.profiles import Profile
from controlplane.schemas import Role, WorkerSnapshot
from workers.sim import Engine, EngineConfig


@dataclass(frozen=True, slots=True)
class ClusterShape:
    """``prefill`` + ``decode`` disaggregated workers, or ``workers`` mixed (role both)."""

    prefill: int = 0
    decode: int = 0
    workers: int = 0

    def __post_init__(self) -> None:
        pd = self.prefill > 0 or self.decode > 0
        if pd and self.workers > 0:
            raise ValueError("give --prefill/--decode or --workers, not both")
        if pd and (self.prefill < 1 or self.decode < 1):
            raise ValueError("a disaggregated cluster needs ≥ 1 prefill and ≥ 1 decode worker")
        if not pd and self.workers < 1:
            raise ValueError("the cluster needs workers")

    @property
    def disaggregated(self) -> bool:
        return self.prefill > 0

    @property
    def gpus(self) -> int:
        return self.prefill + self.decode + self.workers

    def counts(self) -> dict[str, int]:
        if self.disaggregated:
            return {Role.PREFILL.value: self.prefill, Role.DECODE.value: self.decode}
        return {Role.BOTH.value: self.workers}

    def label(self) -> str:
        return f"{self.prefill}P+{self.decode}D" if self.disaggregated else f"{self.workers}x"


class Slot:
    """One worker: its engine, role and lifetime, and the step the driver awaits."""

    __slots__ = (
        "draining",
        "engine",
        "id",
        "pending",
        "ready_s",
        "role",
        "seq",
        "started_s",
        "step_end_s",
        "stopped_s",
    )

    def __init__(
        self, wid: str, role: str, profile: Profile, config: EngineConfig, started_s: float,
        ready_s: float | None = None,
    ) -> None:  # fmt: skip
        self.id = wid
        self.role = role
        self.engine = Engine(profile, config)
        self.started_s = started_s
        self.ready_s = started_s if ready_s is None else ready_s
        """When it can take requests (GPU-seconds are paid from ``started_s``)."""
        self.stopped_s: float | None = None
        self.draining = False
        self.pending = False
        """A wake or step-done event for this slot is in the heap."""
        self.step_end_s = float("inf")
        """End of the step in flight (inf when idle): a decode horizon for P/D."""
        self.seq = 0

    def gpu_seconds(self, end_s: float) -> float:
        stop = end_s if self.stopped_s is None else min(self.stopped_s, end_s)
        return max(0.0, stop - self.started_s)

    def snapshot(self, cluster: str, model: str, now_s: float) -> WorkerSnapshot:
        eng = self.engine
        self.seq += 1
        return WorkerSnapshot(
            cluster=cluster,
            worker=self.id,
            role=self.role,
            model=model,
            up=now_s >= self.ready_s and self.stopped_s is None,
            kv_usage=eng.kv_usage_ratio,
            running=eng.num_running,
            waiting=eng.num_waiting,
            waiting_tokens=eng.waiting_tokens(),
            kv_capacity_tokens=eng.kv_capacity_tokens,
            source="replay",
            ts_ms=int(now_s * 1000.0),
            seq=self.seq,
        )
