"""The Redis store surfaces outages as StoreUnavailable and recovers after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.schemas import WorkerSnapshot
from controlplane.state import StoreUnavailable, open_store
from tests.conftest import RedisServer


async def test_outage_then_recovery(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path)
    srv.start()
    store = open_store(srv.url)
    try:
        s = WorkerSnapshot(cluster="c", worker="w", role="decode", model="m", ts_ms=1)
        await store.publish_snapshot(s)
        srv.stop()
        assert not await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.publish_snapshot(s)
        with pytest.raises(StoreUnavailable):
            await store.get_snapshots("c")
        srv.start()  # same port, empty (no persistence): the next publish re-creates state
        assert await store.ping()
        await store.publish_snapshot(s)
        assert (await store.get_snapshots("c"))["w"] == s
    finally:
        await store.close()
        srv.stop()
