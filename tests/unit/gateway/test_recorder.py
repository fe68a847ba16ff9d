"""RequestRecorder: no record is lost or sent twice while a flush awaits the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.recorder import RequestRecorder
from controlplane.schemas import RequestRecord
from controlplane.state.memory import MemoryStore
from controlplane.state.store import StoreUnavailable

DEADLINE_S = 30.0


def _rec(i: int) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", tenant="t", model="m", arrival_ms=1_000 + i, outcome="ok"
    )


class GatedStore(MemoryStore):
    """``append_requests`` parks on ``gate`` (``entered`` tells the test it is parked)
    and raises while ``fail`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.fail = False
        self.sent: list[str] = []

    async def append_requests(self, cluster: str, records: Sequence[RequestRecord]) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fail:
            raise StoreUnavailable("injected")
        self.sent.extend(r.request_id for r in records)
        await super().append_requests(cluster, records)


def _recorder(store: GatedStore, **kw: int) -> tuple[RequestRecorder, CollectorRegistry]:
    reg = CollectorRegistry()
    return RequestRecorder(store, "c1", GatewayMetrics(reg, "c1"), **kw), reg  # type: ignore[arg-type]


async def test_records_added_during_the_flush_await_are_not_dropped() -> None:
    store = GatedStore()
    rec, reg = _recorder(store, batch=2, max_buffer=4)
    rec.add(_rec(0))
    rec.add(_rec(1))
    flush = asyncio.create_task(rec.flush())
    await asyncio.wait_for(store.entered.wait(), DEADLINE_S)  # r0, r1 in flight
    for i in range(2, 6):  # four more: the buffer holds them all (in-flight ones not counted)
        rec.add(_rec(i))
    store.gate.set()
    await asyncio.wait_for(flush, DEADLINE_S)
    assert store.sent == [f"r{i}" for i in range(6)]
    assert rec.dropped == 0 and rec._buf == []
    dropped = reg.get_sample_value(
        "slaplane_gateway_request_records_dropped_total", {"cluster": "c1"}
    )
    assert dropped == 0


async def test_overflow_drops_only_unsent_records_and_counts_them() -> None:
    store = GatedStore()
    store.gate.set()
    rec, reg = _recorder(store, batch=100, max_buffer=3)
    for i in range(5):
        rec.add(_rec(i))
    await asyncio.wait_for(rec.flush(), DEADLINE_S)
    assert store.sent == ["r2", "r3", "r4"] and rec.dropped == 2
    dropped = reg.get_sample_value(
        "slaplane_gateway_request_records_dropped_total", {"cluster": "c1"}
    )
    assert dropped == 2


async def test_failed_or_cancelled_flush_keeps_the_chunk_in_order() -> None:
    store = GatedStore()
    rec, _ = _recorder(store, batch=2, max_buffer=100)
    rec.add(_rec(0))
    rec.add(_rec(1))
    # cancelled mid-await (shutdown's wait_for): the chunk goes back to the front
    flush = asyncio.create_task(rec.flush())
    await asyncio.wait_for(store.entered.wait(), DEADLINE_S)
    rec.add(_rec(2))
    flush.cancel()
    await asyncio.gather(flush, return_exceptions=True)
    assert [r.request_id for r in rec._buf] == ["r0", "r1", "r2"]
    # a store failure: same
    store.fail = True
    store.gate.set()
    with contextlib.suppress(StoreUnavailable):
        await asyncio.wait_for(rec.flush(), DEADLINE_S)
    assert [r.request_id for r in rec._buf] == ["r0", "r1", "r2"]
    store.fail = False
    await asyncio.wait_for(rec.flush(), DEADLINE_S)
    assert store.sent == ["r0", "r1", "r2"] and rec._buf == []


async def test_run_survives_store_errors_and_flushes_later() -> None:
    store = GatedStore()
    store.fail = True
    store.gate.set()
    rec, reg = _recorder(store, batch=1, max_buffer=100)
    rec.flush_s = 0.01
    task = asyncio.create_task(rec.run())
    try:
        rec.add(_rec(0))
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE_S
        lab = {"cluster": "c1", "op": "append_requests"}
        while (reg.get_sample_value("slaplane_gateway_store_failures_total", lab) or 0) < 2:
            assert loop.time() < end and not task.done()
            await asyncio.sleep(0.005)
        store.fail = False
        rec.add(_rec(1))
        while store.sent != ["r0", "r1"]:
            assert loop.time() < end and not task.done()
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
