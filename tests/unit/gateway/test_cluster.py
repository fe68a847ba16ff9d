"""ClusterState: one worker per URL whatever publishes on it, and a versioned view."""

from __future__ import annotations

import time
from dataclasses import replace

from controlplane.gateway.breaker import CircuitBreakers
from controlplane.gateway.cluster import ClusterState
from controlplane.policy.types import build_pools
from controlplane.schemas import WorkerSnapshot

URL = "http://127.0.0.1:8100"


def _snap(worker: str, source: str = "agent", age_s: float = 0.1, **kw: object) -> WorkerSnapshot:
    ts = int((time.time() - age_s) * 1000)
    return WorkerSnapshot("c", worker, "prefill", "m", url=URL, source=source, ts_ms=ts, **kw)  # type: ignore[arg-type]


def _state() -> ClusterState:
    return ClusterState("c", 2.0, CircuitBreakers())


def test_plugin_shadow_is_not_another_worker() -> None:
    st = _state()
    st.apply(_snap("p0", running=3))
    st.apply(_snap("p0-plugin", "plugin", running=4))
    assert list(st.workers) == ["p0"]
    assert st.workers["p0"].source == "agent" and st.workers["p0"].running == 3
    assert st.pools == {("m", "prefill"): ["p0"]}
    assert st.usable_count(time.time()) == 1


def test_plugin_used_when_agent_is_stale_and_agent_back_when_fresh() -> None:
    st = _state()
    st.apply(_snap("p0", age_s=10.0, running=3))
    st.apply(_snap("p0-plugin", "plugin", running=7))
    shown = st.workers["p0"]  # the agent's id, the plugin's numbers
    assert list(st.workers) == ["p0"] and shown.source == "plugin" and shown.running == 7
    st.apply(_snap("p0", running=1))
    assert st.workers["p0"].source == "agent" and st.workers["p0"].running == 1
    assert st.pools == {("m", "prefill"): ["p0"]}


def test_plugin_only_and_static_entries() -> None:
    st = _state()
    st.add_static("127.0.0.1:8100", "prefill", URL, "m")
    assert list(st.workers) == ["127.0.0.1:8100"]
    st.apply(_snap("p0-plugin", "plugin"))  # no agent: the static id is kept
    assert (
        list(st.workers) == ["127.0.0.1:8100"] and st.workers["127.0.0.1:8100"].source == "plugin"
    )
    st.apply(_snap("p0"))  # an agent appears: its id wins, no duplicate
    assert list(st.workers) == ["p0"]
    solo = _state()
    solo.apply(_snap("p9-plugin", "plugin"))
    assert list(solo.workers) == ["p9-plugin"]


def test_resync_dedupes_by_url() -> None:
    st = _state()
    st.resync({"p0": _snap("p0"), "p0-plugin": _snap("p0-plugin", "plugin")})
    assert list(st.workers) == ["p0"] and st.pools == {("m", "prefill"): ["p0"]}


def test_view_is_reused_until_something_changes() -> None:
    st = _state()
    st.apply(_snap("p0"))
    v1 = st.view()
    assert st.view() is v1 and v1.version is not None
    st.inflight["p0"] = 3  # per-request counters never need a new version
    assert st.view() is v1
    st.apply(replace(st.raw["p0"], running=9, ts_ms=st.raw["p0"].ts_ms + 1))
    v2 = st.view()
    assert v2 is not v1 and v2.version is not None and v2.version > v1.version
    st.breakers.failure("p0", 0.0)
    st.breakers.failure("p0", 0.0)
    st.breakers.failure("p0", 0.0)
    v3 = st.view()
    assert v3 is not v2 and v3.unavailable == frozenset({"p0"})
    st.set_control({"weight:p0": "0.5"})
    assert st.view() is not v3


def test_build_pools_skips_plugin_shadows() -> None:
    ws = {"p0": _snap("p0"), "p0-plugin": _snap("p0-plugin", "plugin")}
    assert build_pools(ws) == {("m", "prefill"): ["p0"]}
