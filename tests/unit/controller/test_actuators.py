"""Actuators: webhook (real HTTP, retries), kubernetes (official client against a
/scale emulator over real HTTP), local (real processes), advisory, the registry."""

from __future__ import annotations

import asyncio
import sys

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from controlplane.controller.actuators import make_actuator
from controlplane.controller.actuators.local import LocalActuator, LocalParams
from controlplane.controller.actuators.webhook import WebhookActuator, WebhookParams
from controlplane.policy.planner.types import ScaleDecision
from tests.unit.controller.kube_emulator import ScaleApi

DEC = ScaleDecision({"prefill": 3, "decode": 2}, {"prefill": 2, "decode": 2})


async def serve(app: web.Application) -> TestServer:
    ts = TestServer(app, host="127.0.0.1")
    await ts.start_server()
    return ts


async def test_webhook_retries_5xx_then_succeeds() -> None:
    seen: list[dict[str, object]] = []
    statuses = [503, 500, 200]

    async def hook(request: web.Request) -> web.Response:
        seen.append({"body": await request.json(), "key": request.headers["Idempotency-Key"]})
        return web.Response(status=statuses.pop(0))

    app = web.Application()
    app.router.add_post("/scale", hook)
    ts = await serve(app)
    act = WebhookActuator(WebhookParams(url=str(ts.make_url("/scale")), backoff_s=0.01), "c1")
    try:
        res = await act.apply(DEC)
    finally:
        await act.close()
        await ts.close()
    assert res.ok and res.applied == {"prefill": 3, "decode": 2}
    assert len(seen) == 3 and len({s["key"] for s in seen}) == 1
    assert seen[0]["body"] == {"cluster": "c1", "desired": {"prefill": 3, "decode": 2},
                               "observed": {"prefill": 2, "decode": 2}, "remove_workers": {},
                               "reasons": {}}  # fmt: skip


async def test_webhook_gives_up_on_4xx_and_on_dead_url() -> None:
    app = web.Application()
    app.router.add_post("/scale", lambda r: web.Response(status=400))
    ts = await serve(app)
    act = WebhookActuator(WebhookParams(url=str(ts.make_url("/scale")), backoff_s=0.0))
    res = await act.apply(DEC)
    await ts.close()
    assert not res.ok and res.detail == "http 400"
    dead = WebhookActuator(WebhookParams(url="http://127.0.0.1:9/x", retries=1, backoff_s=0.0))
    res = await dead.apply(DEC)
    await act.close()
    await dead.close()
    assert not res.ok and "Error" in res.detail


async def test_kubernetes_patches_scale_subresources() -> None:
    pytest.importorskip("kubernetes")
    api = ScaleApi({"deployments/llm-prefill": 2, "statefulsets/llm-decode": 2,
                    "leaderworkerset.x-k8s.io/v1/leaderworkersets/big": 1})  # fmt: skip
    ts = await serve(api.app())
    params = {
        "namespace": "serving",
        "host": str(ts.make_url("")).rstrip("/"),
        "targets": {"prefill": "deployment/llm-prefill", "decode": "statefulset/llm-decode",
                    "both": "leaderworkerset.x-k8s.io/v1/leaderworkersets/big"},
    }  # fmt: skip
    act = make_actuator("kubernetes", params)
    try:
        assert await act.current_replicas() == {"prefill": 2, "decode": 2, "both": 1}
        res = await act.apply(ScaleDecision({"prefill": 3, "decode": 2, "both": 4}, {}))
        assert res.ok and res.applied == {"prefill": 3, "decode": 2, "both": 4}
        # absolute targets, and unchanged ones are not patched
        assert [(k, b) for k, _, b in api.patches] == [
            ("leaderworkerset.x-k8s.io/v1/leaderworkersets/big", {"spec": {"replicas": 4}}),
            ("deployments/llm-prefill", {"spec": {"replicas": 3}}),
        ]
        assert await act.current_replicas() == {"prefill": 3, "decode": 2, "both": 4}
        bad = make_actuator("kubernetes", {**params, "targets": {"prefill": "deployment/nope"}})
        res = await bad.apply(ScaleDecision({"prefill": 1}, {}))
        assert not res.ok and "prefill" in res.detail
        await bad.close()
    finally:
        await act.close()
        await ts.close()


async def test_kubernetes_api_that_never_answers_is_a_failed_actuation() -> None:
    """Every API call carries a request timeout: a server that accepts the connection and
    never answers yields a failed actuation (and "cannot tell" replicas), not a hang."""
    pytest.importorskip("kubernetes")
    api = ScaleApi({"deployments/llm-prefill": 2})
    api.hang = True
    ts = await serve(api.app())
    params = {
        "host": str(ts.make_url("")).rstrip("/"),
        "targets": {"prefill": "deployment/llm-prefill"},
        "request_timeout_s": 0.5,
    }
    act = make_actuator("kubernetes", params)
    try:
        res = await asyncio.wait_for(act.apply(ScaleDecision({"prefill": 3}, {})), 60)
        assert not res.ok and res.applied == {} and "prefill" in res.detail
        assert "time" in res.detail.lower(), res.detail  # "timed out" or TimeoutError
        assert await asyncio.wait_for(act.current_replicas(), 60) is None
        assert api.held >= 2
    finally:
        api.release.set()
        await act.close()
        await ts.close()


def test_kubernetes_request_timeout_is_configurable() -> None:
    from controlplane.controller.actuators.kubernetes import KubernetesParams

    assert KubernetesParams().request_timeout_s > 0
    with pytest.raises(ValueError):
        KubernetesParams(request_timeout_s=0)


SLEEPER = f"{sys.executable} -c 'import time; time.sleep(60)' {{role}} {{worker}} {{port}}"


async def test_local_starts_and_stops_processes_it_owns() -> None:
    act = LocalActuator(LocalParams(worker_cmd=SLEEPER, agent_cmd=SLEEPER, stop_timeout_s=5))
    try:
        res = await act.apply(ScaleDecision({"prefill": 2, "decode": 1}, {}))
        assert res.ok and res.applied == {"prefill": 2, "decode": 1}
        assert await act.current_replicas() == {"prefill": 2, "decode": 1}
        names = sorted(act.workers["prefill"])
        assert names == ["local-prefill-1", "local-prefill-2"]
        procs = [p for m in act.workers["prefill"].values() for p in m.procs]
        assert len(procs) == 4 and all(p.returncode is None for p in procs)
        # scale down removes exactly the drained worker
        res = await act.apply(
            ScaleDecision({"prefill": 1, "decode": 1}, {}, {"prefill": ("local-prefill-1",)})
        )
        assert res.removed == ("local-prefill-1",) and list(act.workers["prefill"]) == [
            "local-prefill-2"
        ]
        assert all(p.returncode is not None for p in procs[:2])
        # a worker that dies is replaced on the next apply (level-triggered)
        act.workers["decode"]["local-decode-1"].procs[0].kill()
        await asyncio.sleep(0.2)
        res = await act.apply(ScaleDecision({"prefill": 1, "decode": 1}, {}))
        assert "local-decode-1" in res.removed and len(act.workers["decode"]) == 1
    finally:
        await act.close()
    assert await act.current_replicas() == {"prefill": 0, "decode": 0}


async def test_advisory_and_registry() -> None:
    act = make_actuator("advisory", {})
    res = await act.apply(DEC)
    assert res.ok and res.applied == {} and await act.current_replicas() is None
    with pytest.raises(ValueError, match="advisory"):
        make_actuator("terraform", {})
