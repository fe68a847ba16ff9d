"""Issue 15: workers only at allowed addresses, and dropped when their heartbeat is gone."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from controlplane.gateway.app import Gateway
from controlplane.gateway.breaker import CircuitBreakers
from controlplane.gateway.cluster import ClusterState, Follower, WorkerAllowList
from controlplane.gateway.config import GatewaySettings
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.schemas import WorkerSnapshot
from controlplane.state.memory import MemoryStore

ALLOW = ["10.0.0.0/8", "fd00::/8", "decode-0.workers.svc:8000", "[::1]:9000"]


def _snap(worker: str, url: str, age_s: float = 0.1) -> WorkerSnapshot:
    ts = int((time.time() - age_s) * 1000)
    return WorkerSnapshot("c", worker, "decode", "m", url=url, ts_ms=ts)


def _state(allow: list[str] | None = None, ttl_s: float = 60.0) -> ClusterState:
    return ClusterState(
        "c", 2.0, CircuitBreakers(), allow=WorkerAllowList(allow or []), worker_ttl_s=ttl_s
    )


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://10.1.2.3:8000", True),
        ("https://10.1.2.3", True),
        ("http://[fd00::5]:8000", True),
        ("http://decode-0.workers.svc:8000/", True),
        ("http://[::1]:9000", True),
        ("http://decode-0.workers.svc:8001", False),  # listed host, other port
        ("http://decode-0.workers.svc", False),
        ("http://169.254.169.254/latest", False),  # cloud metadata
        ("http://11.0.0.1:8000", False),
        ("http://example.com:8000", False),  # names are never resolved
        ("ftp://10.1.2.3", False),
        ("http://[::1]:9001", False),
        ("not a url", False),
    ],
)
def test_allow_list(url: str, ok: bool) -> None:
    assert WorkerAllowList(ALLOW).allows(url) is ok


def test_empty_allow_list_allows_anything() -> None:
    assert WorkerAllowList().allows("http://169.254.169.254")


def test_settings_validate_and_split() -> None:
    s = GatewaySettings(worker_networks="10.0.0.0/8, w:80")  # type: ignore[arg-type]
    assert s.worker_networks == ["10.0.0.0/8", "w:80"] and s.worker_ttl_s == 60.0
    for bad in ("10.0.0.0/33", "host-without-port", "h:port", "h:80/path"):
        with pytest.raises(ValidationError):
            GatewaySettings(worker_networks=[bad])


def test_worker_outside_is_never_routed_to_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    st = _state(ALLOW)
    with caplog.at_level(logging.WARNING, logger="slaplane.gateway.cluster"):
        ok = _snap("ok", "http://10.0.0.7:8000")
        st.apply(ok)
        st.apply(_snap("evil", "http://169.254.169.254"))
        st.apply(_snap("evil", "http://169.254.169.254"))
        st.resync({"ok": ok, "evil": _snap("evil", "http://169.254.169.254")})
    assert set(st.workers) == {"ok"}
    assert st.pools == {("m", "decode"): ["ok"]}
    assert st.rejected == 3
    warned = [r for r in caplog.records if getattr(r, "worker", None) == "evil"]
    assert len(warned) == 1


def test_worker_moving_outside_is_dropped() -> None:
    st = _state(ALLOW)
    st.apply(_snap("w", "http://10.0.0.7:8000", age_s=0.2))
    assert set(st.workers) == {"w"}
    st.apply(_snap("w", "http://203.0.113.9:8000"))
    assert st.workers == {} and st.pools == {}
    assert "w" not in st.raw


def test_static_workers_are_neither_filtered_nor_expired() -> None:
    st = _state(ALLOW, ttl_s=1.0)
    st.add_static("s", "decode", "http://203.0.113.9:8000", "m")
    st.resync({})
    assert set(st.workers) == {"s"}


def test_expired_heartbeats_are_dropped() -> None:
    st = _state(ttl_s=60.0)
    st.apply(_snap("old", "http://a", age_s=120.0))
    assert st.workers == {}
    st.apply(_snap("w", "http://b"))
    st.resync({"w": _snap("w", "http://b", age_s=90.0), "v": _snap("v", "http://c")})
    assert set(st.workers) == {"v"}


async def test_resync_prunes_state_and_store() -> None:
    store = MemoryStore()
    st = _state(ttl_s=60.0)
    fol = Follower(store, st, GatewayMetrics(CollectorRegistry(), "c"))
    await store.publish_snapshot(_snap("live", "http://a"))
    await store.publish_snapshot(_snap("gone", "http://b", age_s=120.0))
    await fol.resync_once()
    assert set(st.workers) == {"live"}
    assert set(await store.list_workers("c")) == {"live"}


def test_gateway_wires_the_settings() -> None:
    settings = GatewaySettings(
        _env_prefix="SLAPLANE_GW_TESTING_UNSET_",  # type: ignore[call-arg]
        worker_networks=["10.0.0.0/8"],
        worker_ttl_s=30.0,
    )
    gw = Gateway(settings, MemoryStore())
    assert gw.state.worker_ttl_s == 30.0
    gw.state.apply(_snap("x", "http://192.168.1.1"))
    assert gw.state.workers == {}
    val = gw.registry.get_sample_value(
        "slaplane_gateway_worker_snapshots_rejected_total", {"cluster": settings.cluster}
    )
    assert val == 1.0
