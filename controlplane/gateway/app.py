"""The gateway process: HTTP handlers and wiring, auth → admission → dispatch → relay.

This module holds the edge (routes, auth, errors, health, metrics) and the per-request
sequence; ``admit.py`` carries out the request pipeline's decision, ``dispatch.py``
gets the first upstream byte (P/D handoff, retries, displacement), ``stream.py`` relays
the response and ``serve.py`` judges it.

Policy decisions come from the pure core (``controlplane.policy``) over the
in-memory ``ClusterState``; the only store round trips on a request's path are
the tenant lookups (cached) and the atomic rate-limit/concurrency checks, both
failing open to local state when the store is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controlplane.errors import (
    ClientRejected,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    SlaplaneError,
    Unauthorized,
)
from controlplane.gateway.admit import AdmissionGate
from controlplane.gateway.breaker import CircuitBreakers
from controlplane.gateway.cluster import ClusterState, Follower, WorkerAllowList
from controlplane.gateway.config import GatewaySettings
from controlplane.gateway.dispatch import Dispatcher
from controlplane.gateway.limits import Limits
from controlplane.gateway.metrics import GatewayMetrics
from controlplane.gateway.parse import ParsedRequest, parse_body
from controlplane.gateway.recorder import RequestRecorder
from controlplane.gateway.relay import Timings
from controlplane.gateway.serve import Outcome, RequestJudge
from controlplane.gateway.stream import StreamRelay
from controlplane.gateway.tenants import AuthFailures, TenantDirectory
from controlplane.gateway.upstream import AiohttpWorkerClient, UpstreamStream, WorkerClient
from controlplane.policy.predictor import LatencyPredictor, ProfilePredictor
from controlplane.policy.request.admission import AdmissionParams, AdmissionPolicy
from controlplane.policy.request.admission.rate_limit import estimate_tokens
from controlplane.policy.request.ledger import RequestLedger
from controlplane.policy.request.pipeline import RequestPipeline
from controlplane.policy.request.registry import RouterConfig, build_router
from controlplane.policy.types import RouteDecision, RouteRequest
from controlplane.schemas import DEFAULT_TENANT
from controlplane.state.store import Store

log = logging.getLogger("slaplane.gateway")
UNKNOWN_MODEL = "unknown"
"""The ``model`` label of requests for a model no pool serves (client input never is one)."""
_TENANT_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _worker_id(url: str) -> str:
    return urlsplit(url).netloc or url


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        store: Store,
        *,
        client: WorkerClient | None = None,
        registry: CollectorRegistry | None = None,
        predictor: LatencyPredictor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.store = store
        self.registry = registry or CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry, settings.cluster)
        self.client = client or AiohttpWorkerClient(
            settings.connect_timeout_s, settings.first_byte_timeout_s, settings.request_timeout_s
        )
        self.breakers = CircuitBreakers(settings.breaker_failures, settings.breaker_cooldown_s)
        self.ledger = RequestLedger()
        self.state = ClusterState(
            settings.cluster, settings.stale_after_s, self.breakers, self.ledger,
            allow=WorkerAllowList(settings.worker_networks), worker_ttl_s=settings.worker_ttl_s,
            registry=self.registry,
        )  # fmt: skip
        self.clock = clock
        """Wall clock of the request path (routing, admission); tests may pass their own."""
        self.predictor = predictor or ProfilePredictor()
        self.router = build_router(
            RouterConfig(policy=settings.policy, params=settings.policy_params), self.predictor
        )
        self.admission = AdmissionPolicy(AdmissionParams.model_validate(settings.admission_params))
        self.tenants = TenantDirectory(
            store, self.metrics, settings.tenant_cache_s, settings.store_timeout_s
        )
        self.auth_failures = AuthFailures(
            settings.auth_failures_burst, settings.auth_failures_per_min
        )
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]
        self.limits = Limits(
            store, settings.cluster, self.metrics, self.admission.params.rate_limit,
            settings.store_timeout_s, settings.store_backoff_max_s,
        )  # fmt: skip
        self.recorder = RequestRecorder(
            store, settings.cluster, self.metrics, settings.record_flush_s
        )
        self.follower = Follower(
            store, self.state, self.metrics, settings.resync_s, settings.store_backoff_max_s
        )
        self.judge = RequestJudge(self.metrics, self.recorder, settings.cluster)
        self._id_prefix = uuid.uuid4().hex[:12]
        """Request ids: a random per-process prefix and a counter (no urandom per request)."""
        self._ids = itertools.count()
        self.pipeline = RequestPipeline(
            self.router, self.admission, self.predictor, self.ledger,
            admission_enabled=settings.admission,
        )  # fmt: skip
        self.gate = AdmissionGate(
            self.pipeline, self.state, self.tenants, self.metrics, self.clock, settings.hold_poll_s
        )
        self.waitq = self.gate.waitq
        self.dispatcher = Dispatcher(
            settings, self.client, self.state, self.breakers, self.metrics, self.gate
        )
        self.relay = StreamRelay(self.gate, self.judge)
        self.state.listener = self.waitq.wake
        self._overhead = self.metrics.overhead.labels(settings.cluster)
        self._inflight_gauge = self.metrics.inflight.labels(settings.cluster)
        self._tasks: list[asyncio.Task[None]] = []
        self._events: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        for role, urls in (("prefill", settings.prefill_url), ("decode", settings.decode_url),
                           ("both", settings.worker_url)):  # fmt: skip
            for u in urls:
                self.state.add_static(_worker_id(u), role, u.rstrip("/"), settings.model)

    # --- lifecycle -----------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.s.max_body_bytes, middlewares=[self._errors_middleware]
        )
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/metrics", self.metrics_handler)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, app: web.Application) -> None:
        try:
            await asyncio.wait_for(self.follower.resync_once(), 2.0)
            await asyncio.wait_for(self.tenants.refresh(), 2.0)
        except Exception as exc:  # start anyway; the followers keep retrying
            log.warning("store not reachable at startup", extra={"err": repr(exc)})
        await self._discover_static_models()
        loops = [self.follower.run_resync(), self.follower.run_telemetry(),
                 self.follower.run_events(self._events), self.recorder.run(),
                 self._run_events(), self._run_prober()]  # fmt: skip
        self._tasks = [asyncio.create_task(c) for c in loops]

    async def _cleanup(self, app: web.Application) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.limits.close()
        try:
            await asyncio.wait_for(self.recorder.flush(), 2.0)
        except Exception as exc:
            log.warning("request records not flushed at shutdown", extra={"err": repr(exc)})
        await self.client.close()

    async def _discover_static_models(self) -> None:
        async def one(w: str) -> None:
            try:
                data = await self.client.get_json(self.state.url(w) + "/v1/models", 2.0)
                models = [m["id"] for m in data.get("data", []) if isinstance(m, dict)]
                if models and not self.s.model:
                    self.state.set_static_model(w, models[0])
            except Exception as exc:
                log.warning(
                    "static worker not answering /v1/models", extra={"worker": w, "err": repr(exc)}
                )

        await asyncio.gather(*(one(w) for w in self.state.static if not self.state.static[w].model))

    async def _run_events(self) -> None:
        """Tenant/key changes invalidate caches; everything refreshes tenants' gauges."""
        while True:
            ev = await self._events.get()
            if ev.get("kind") in ("tenant", "apikey"):
                self.tenants.invalidate()
                try:
                    await self.tenants.refresh()
                except Exception as exc:
                    log.warning("tenant refresh failed", extra={"err": repr(exc)})

    async def _run_prober(self) -> None:
        """Lets a broken worker back after a healthy /health (breaker half-open probe),
        and retries model discovery for static workers that were not up at startup."""
        tick = 0
        while True:
            await asyncio.sleep(0.25)
            tick += 1
            now = time.time()
            for w in self.breakers.probe_due(now):
                try:
                    await self.client.get_json(self.state.url(w) + "/health", 1.0)
                    if self.breakers.success(w):
                        self.metrics.breaker_open.labels(self.s.cluster, w).set(0)
                        log.info("worker back after probe", extra={"worker": w})
                except Exception:
                    self.breakers.probed_bad(w, now)
            if tick % 8 == 0:
                await self._discover_static_models()
                if tick % 40 == 0:
                    with contextlib.suppress(Exception):
                        await self.tenants.refresh()

    # --- edge ----------------------------------------------------------------
    @web.middleware
    async def _errors_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            resp: web.StreamResponse = await handler(request)
            return resp
        except SlaplaneError as e:
            return self._error(e)
        except web.HTTPRequestEntityTooLarge:
            return self._error(
                PayloadTooLarge(f"Request body exceeds {self.s.max_body_bytes} bytes")
            )
        except web.HTTPNotFound:
            return self._error(NotFound(f"No route for {request.method} {request.path}"))
        except web.HTTPMethodNotAllowed:
            err = NotFound(
                f"Method {request.method} not allowed on {request.path}", code="method_not_allowed"
            )
            err.status = 405
            return self._error(err)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("unhandled error", extra={"path": request.path})
            return self._error(SlaplaneError("Internal gateway error"))

    @staticmethod
    def _error(e: SlaplaneError) -> web.Response:
        if isinstance(e, ClientRejected) and e.body:
            return web.Response(status=e.status, body=e.body, content_type="application/json")
        return web.json_response(e.to_openai(), status=e.status, headers=e.headers())

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(self, request: web.Request) -> web.Response:
        n = self.state.usable_count(time.time())
        body = {"ready": n > 0, "workers": n, "store": self.follower.store_ok}
        return web.json_response(body, status=200 if n > 0 else 503)

    async def metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def models(self, request: web.Request) -> web.Response:
        await self._identify(request)
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "slaplane"}
            for m in self.state.models()
        ]
        return web.json_response({"object": "list", "data": data})

    def _trusted(self, client: str) -> bool:
        """Whether ``client`` is a configured front proxy (may assert X-Tenant-ID)."""
        try:
            addr = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(addr in net for net in self._proxies)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat")

    async def _identify(self, request: web.Request) -> str:
        client = request.remote or ""
        if self.s.trust_tenant_header and self._trusted(client):
            t = request.headers.get("X-Tenant-ID")
            if t:
                if len(t) > 64 or not set(t) <= _TENANT_OK:
                    raise Unauthorized("Invalid X-Tenant-ID header.", code="invalid_tenant")
                return t
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            now = time.monotonic()
            self.auth_failures.check(client, now)
            try:
                return await self.tenants.tenant_for_key(auth[7:].strip())
            except Unauthorized:
                self.auth_failures.failed(client, now)
                raise
        if not self.s.require_key:
            return DEFAULT_TENANT
        raise Unauthorized(
            "You didn't provide an API key. Use 'Authorization: Bearer <key>'.",
            code="missing_api_key",
        )

    # --- request path ----------------------------------------------------------
    async def _handle(self, request: web.Request, kind: str) -> web.StreamResponse:
        t = Timings(time.perf_counter())
        out = Outcome(request_id=f"gw-{self._id_prefix}{next(self._ids):08x}",
                      arrival_ms=int(time.time() * 1000))  # fmt: skip
        hold = None
        try:
            # who is asking comes first: nothing of an unauthenticated request is read,
            # parsed, hashed or turned into a metric label
            tenant = await self._identify(request)
            sla = self.tenants.cached_sla(tenant) or await self.tenants.sla_for(tenant)
            out.tenant, out.sla = tenant, sla
            out.label_tenant = tenant if sla.tenant == tenant else DEFAULT_TENANT
            raw = await request.read()
            pr = parse_body(raw, kind, self.router.block_tokens)
            out.prompt_tokens = pr.prompt_tokens
            if pr.model not in self.state.model_names:
                out.model = UNKNOWN_MODEL  # labels take served models only
                raise ModelNotFound(f"The model `{pr.model}` does not exist.", param="model")
            out.model = pr.model
            rreq = RouteRequest(
                out.request_id, tenant, pr.model, pr.prompt_tokens, pr.max_tokens, sla.priority,
                sla.ttft_ms, sla.itl_ms, pr.block_hashes,
            )  # fmt: skip
            self.gate.arrive(rreq)
            if sla.max_concurrency is not None or sla.rate_limit.rpm or sla.rate_limit.tpm:
                hold = await self.limits.admit(
                    sla, tenant, estimate_tokens(pr.prompt_tokens, pr.max_tokens), out.request_id
                )
            decision = await self.gate.admit(rreq, out)
            self._overhead.observe(time.perf_counter() - t.t0)
            return await self._serve(request, pr, rreq, decision, t, out)
        except SlaplaneError as e:
            self.judge.failed(out, t, e)
            raise
        except asyncio.CancelledError:
            self.judge.finish(out, t, "cancelled")
            raise
        finally:
            self.gate.release(out.request_id)
            if hold is not None:
                await self.limits.release(hold)

    async def _serve(
        self,
        request: web.Request,
        pr: ParsedRequest,
        rreq: RouteRequest,
        decision: RouteDecision,
        t: Timings,
        out: Outcome,
    ) -> web.StreamResponse:
        self._inflight_gauge.inc()
        up: UpstreamStream | None = None
        try:
            up, it, first = await self.dispatcher.open(pr, rreq, decision, out, t)
            return await self.relay.respond(request, pr, up, it, first, t, out)
        finally:
            self._inflight_gauge.dec()
            if up is not None:
                up.close()
