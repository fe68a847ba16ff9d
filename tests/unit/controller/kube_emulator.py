"""A small aiohttp server emulating the Kubernetes ``/scale`` subresource API.

Serves GET and PATCH (JSON merge patch only, like the real API server for this
content type) of ``autoscaling/v1`` Scale objects for Deployments, StatefulSets and
custom resources, so the official client is exercised over real HTTP. No cluster
is available on these machines; this is the stand-in, and it is what the tests use.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


class ScaleApi:
    def __init__(self, objects: dict[str, int]) -> None:
        """``objects``: ``"deployments/NAME"`` (or ``"GROUP/VERSION/PLURAL/NAME"``) → replicas."""
        self.objects = dict(objects)
        self.patches: list[tuple[str, str, Any]] = []
        self.hang = False
        """While set, requests are held (an API server that accepted the connection and
        never answers) until ``release`` is set."""
        self.release = asyncio.Event()
        self.held = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/apis/apps/v1/namespaces/{ns}/{kind}/{name}/scale", self.apps)
        app.router.add_route(
            "*", "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/scale", self.custom
        )
        return app

    async def apps(self, request: web.Request) -> web.Response:
        m = request.match_info
        return await self._handle(request, f"{m['kind']}/{m['name']}", m["ns"], "apps/v1")

    async def custom(self, request: web.Request) -> web.Response:
        m = request.match_info
        key = f"{m['group']}/{m['version']}/{m['plural']}/{m['name']}"
        return await self._handle(request, key, m["ns"], f"{m['group']}/{m['version']}")

    async def _handle(self, request: web.Request, key: str, ns: str, api: str) -> web.Response:
        if self.hang:
            self.held += 1
            await self.release.wait()
        if key not in self.objects:
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "reason": "NotFound", "code": 404, "message": f"{key} not found"}  # fmt: skip
            return web.json_response(status, status=404)
        if request.method == "PATCH":
            ctype = request.headers.get("Content-Type", "")
            if ctype != "application/merge-patch+json":
                return web.json_response(
                    {"kind": "Status", "code": 415, "message": ctype}, status=415
                )
            body = json.loads(await request.text())
            self.patches.append((key, ctype, body))
            self.objects[key] = int(body["spec"]["replicas"])
        elif request.method != "GET":
            return web.json_response({"kind": "Status", "code": 405}, status=405)
        n = self.objects[key]
        return web.json_response(
            {
                "kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": key.rsplit("/", 1)[-1], "namespace": ns},
                "spec": {"replicas": n}, "status": {"replicas": n, "selector": "app=x"},
            }
        )  # fmt: skip
