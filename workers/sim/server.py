"""The simulated worker's HTTP surface: what a vLLM 0.32 OpenAI server shows a client.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (stream or not),
``GET /v1/models``, ``/health``, ``/version``, ``/metrics``; sim-only:
``GET|POST /sim/faults`` (runtime fault injection) and ``GET /sim/state``.
Every error leaves as OpenAI-style JSON with the right status, never a traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from controlplane.profiles import Profile
from workers.sim.engine import Engine
from workers.sim.faults import FaultDice, Faults
from workers.sim.metrics import SimCollector, make_registry
from workers.sim.openai_format import (
    SSE_DONE,
    ChatBody,
    CompletionBody,
    Formatter,
    OpenAIError,
    dumps,
    parse_body,
)
from workers.sim.runner import EngineRunner, RequestStream
from workers.sim.settings import SimWorkerSettings
from workers.sim.tokens import chat_prompt, generated_text, prompt_digest, tokenize
from workers.sim.types import FinishedRequest, SimRequest

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Gen:
    """A parsed generation request, ready for the engine."""

    chat: bool
    rid: str
    prompt_ids: list[int]
    max_tokens: int
    stream: bool
    include_usage: bool
    remote_decode: bool
    remote_prefill_tokens: int
    hash_ids: list[int] | None


def _json(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to an OpenAI-style JSON error."""
    try:
        return await handler(request)
    except OpenAIError as exc:
        return _json(exc.status, exc.body())
    except web.HTTPRequestEntityTooLarge as exc:
        return _json(413, OpenAIError(413, f"Request body too large: {exc.text}").body())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json(exc.status, OpenAIError(exc.status, exc.reason).body())
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return _json(500, OpenAIError(500, "Internal server error").body())


class SimServer:
    """One simulated worker: engine runner + OpenAI routes + vLLM metrics."""

    def __init__(self, settings: SimWorkerSettings, profile: Profile) -> None:
        self.settings = settings
        self.profile = profile
        self.model = settings.model or profile.model
        self.role = settings.role.value
        self.worker_id = settings.worker_id or f"sim-{settings.host}:{settings.port}"
        self.engine = Engine(profile, settings.engine_config())
        self.runner = EngineRunner(self.engine, settings.time_scale)
        seed_bytes = f"{self.worker_id}/{settings.seed}".encode()
        digest = hashlib.sha256(seed_bytes).hexdigest()
        self.engine_uuid = str(uuid.UUID(digest[:32]))
        self.formatter = Formatter(self.model, f"vllm-0.32.0-{digest[32:40]}")
        self.faults = Faults(
            error_rate=settings.error_rate,
            added_latency_ms=settings.added_latency_ms,
            hang_rate=settings.hang_rate,
            hang_mode=settings.hang_mode,
        )
        self._dice = FaultDice(settings.seed)
        self._ids = random.Random(settings.seed ^ 0x5EED)
        self._counter = 0
        self._next_block = 1
        self.collector = SimCollector(self.engine, self.model, self.role)
        self.registry = make_registry(self.collector)
        self.created_s = int(time.time())

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors], client_max_size=self.settings.max_body_bytes)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/version", self._version)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/sim/faults", self._get_faults)
        app.router.add_post("/sim/faults", self._set_faults)
        app.router.add_get("/sim/state", self._state)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self.runner.start()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.runner.stop()

    # ---- small routes ----
    async def _health(self, _r: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _version(self, _r: web.Request) -> web.Response:
        return _json(200, dumps({"version": "0.32.0"}))

    async def _models(self, _r: web.Request) -> web.Response:
        card = {
            "id": self.model,
            "object": "model",
            "created": self.created_s,
            "owned_by": "vllm",
            "root": self.model,
            "parent": None,
            "max_model_len": self.engine.max_model_len,
            "permission": [],
        }
        return _json(200, dumps({"object": "list", "data": [card]}))

    async def _metrics(self, _r: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get_faults(self, _r: web.Request) -> web.Response:
        return _json(200, dumps(self.faults.model_dump()))

    async def _set_faults(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            patch = json.loads(raw or b"{}")
        except ValueError:
            raise OpenAIError(400, "Invalid JSON body") from None
        if not isinstance(patch, dict):
            raise OpenAIError(400, "Request body must be a JSON object")
        try:
            self.faults = self.faults.merged(patch)
        except ValidationError as exc:
            raise OpenAIError(400, str(exc.errors()[0]["msg"])) from None
        log.info("faults changed", extra={"faults": self.faults.model_dump()})
        return _json(200, dumps(self.faults.model_dump()))

    async def _state(self, _r: web.Request) -> web.Response:
        eng = self.engine
        st = eng.stats
        return _json(
            200,
            dumps(
                {
                    "worker_id": self.worker_id,
                    "role": self.role,
                    "model": self.model,
                    "profile": self.profile.name,
                    "time_s": self.runner.now_s(),
                    "time_scale": self.runner.time_scale,
                    "running": eng.num_running,
                    "waiting": eng.num_waiting,
                    "waiting_tokens": eng.waiting_tokens(),
                    "kv_usage": eng.kv_usage_ratio,
                    "kv_capacity_tokens": eng.kv_capacity_tokens,
                    "prompt_tokens_total": st.prompt_tokens_total,
                    "generation_tokens_total": st.generation_tokens_total,
                    "prefix_cache_hits_total": st.prefix_cache_hits_total,
                    "num_preemptions_total": st.num_preemptions_total,
                    "faults": self.faults.model_dump(),
                }
            ),
        )

    # ---- generation ----
    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        faults = self.faults
        if faults.added_latency_ms > 0:
            await asyncio.sleep(faults.added_latency_ms / 1000.0)
        if self._dice.hit(faults.error_rate):
            raise OpenAIError(500, "Simulated worker error (fault injection)")
        hang = self._dice.hit(faults.hang_rate)
        raw = await request.read()
        gen = self._parse(raw, request, chat)
        if hang and (faults.hang_mode == "before" or not gen.stream):
            await asyncio.Event().wait()  # accept and never answer
        eid = self._engine_id(gen.rid)
        try:
            stream = self.runner.submit(
                SimRequest(
                    request_id=eid,
                    prompt_tokens=len(gen.prompt_ids),
                    max_tokens=gen.max_tokens,
                    prompt_token_ids=gen.prompt_ids,
                    hash_ids=gen.hash_ids,
                    remote_prefill_tokens=gen.remote_prefill_tokens,
                    remote_decode=gen.remote_decode,
                )
            )
        except ValueError as exc:
            raise OpenAIError(400, str(exc)) from None
        finished = False
        try:
            if gen.stream:
                hang_after = faults.hang_after_tokens if hang else None
                resp, finished = await self._stream(request, gen, stream, hang_after)
                return resp
            fin, n = await self._collect(stream)
            finished = True
            return self._full_response(gen, fin, n)
        finally:
            if not finished:
                self.runner.abort(eid)

    def _engine_id(self, rid: str) -> str:
        self._counter += 1
        return f"{rid}#{self._counter}"

    def _parse(self, raw: bytes, request: web.Request, chat: bool) -> _Gen:
        body: ChatBody | CompletionBody
        if chat:
            body = parse_body(raw, ChatBody)
            ids = tokenize(chat_prompt(body.messages))
            max_tokens = body.max_tokens or body.max_completion_tokens
        else:
            body = parse_body(raw, CompletionBody)
            ids = self._prompt_ids(body.prompt)
            max_tokens = body.max_tokens
        if body.model is not None and body.model != self.model:
            raise OpenAIError(404, f"The model `{body.model}` does not exist.", param="model")
        if body.n != 1:
            raise OpenAIError(400, "The simulated worker supports only n=1", param="n")
        limit = self.engine.max_model_len
        if len(ids) >= limit:
            raise OpenAIError(
                400,
                f"This model's maximum context length is {limit} tokens. However, your request "
                f"has {len(ids)} input tokens. Please reduce the length of the input messages.",
                param="prompt" if not chat else "messages",
            )
        if max_tokens is None:
            max_tokens = min(self.settings.default_max_tokens, limit - len(ids))
        elif len(ids) + max_tokens > limit:
            raise OpenAIError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{len(ids) + max_tokens} tokens ({len(ids)} in the messages, {max_tokens} in the "
                "completion). Please reduce the length of the messages or completion.",
                param="max_tokens",
            )
        kv = body.kv_transfer_params or {}
        remote_decode = bool(kv.get("do_remote_decode"))
        remote_tokens = 0
        if kv.get("do_remote_prefill"):
            n = kv.get("remote_num_tokens")
            remote_tokens = n if isinstance(n, int) and n > 0 else len(ids)
            remote_tokens = min(remote_tokens, len(ids))
        base = request.headers.get("X-Request-Id") or body.request_id or self._random_id()
        prefix = "chatcmpl-" if chat else "cmpl-"
        opts = body.stream_options
        return _Gen(
            chat=chat,
            rid=base if base.startswith(prefix) else prefix + base,
            prompt_ids=ids,
            max_tokens=max_tokens,
            stream=body.stream,
            include_usage=bool(body.stream and opts is not None and opts.include_usage),
            remote_decode=remote_decode,
            remote_prefill_tokens=remote_tokens,
            hash_ids=body.hash_ids,
        )

    @staticmethod
    def _prompt_ids(prompt: str | list[int] | list[str] | list[list[int]]) -> list[int]:
        if isinstance(prompt, str):
            return tokenize(prompt)
        if not prompt:
            raise OpenAIError(400, "prompt must not be empty", param="prompt")
        first = prompt[0]
        if isinstance(first, int):
            return [int(x) for x in prompt if isinstance(x, int)]
        if len(prompt) > 1:
            raise OpenAIError(400, "The simulated worker takes one prompt per request", "prompt")
        if isinstance(first, str):
            return tokenize(first)
        if not first:
            raise OpenAIError(400, "prompt must not be empty", param="prompt")
        return list(first)

    def _random_id(self) -> str:
        return f"{self._ids.getrandbits(64):016x}"

    def _created(self) -> int:
        fixed = self.settings.fixed_created
        return int(time.time()) if fixed is None else fixed

    async def _collect(self, stream: RequestStream) -> tuple[FinishedRequest, int]:
        n = 0
        while True:
            ev = await stream.queue.get()
            if ev.finished is not None:
                return ev.finished, n
            n += ev.count

    def _full_response(self, gen: _Gen, fin: FinishedRequest, n: int) -> web.Response:
        digest = prompt_digest(gen.prompt_ids)
        text = generated_text(self.settings.seed, digest, 0, n)
        kv = self._prefill_handle(gen, fin) if gen.remote_decode else None
        build = self.formatter.chat_body if gen.chat else self.formatter.completion_body
        body = build(gen.rid, self._created(), text, fin.reason, len(gen.prompt_ids), n, kv)
        return _json(200, body)

    def _prefill_handle(self, gen: _Gen, fin: FinishedRequest) -> dict[str, Any]:
        """NixlConnector-style handle a decode worker (or the gateway) passes on."""
        nblocks = -(-len(gen.prompt_ids) // self.engine.block_size)
        first = self._next_block
        self._next_block += nblocks
        return {
            "do_remote_prefill": True,
            "do_remote_decode": False,
            "remote_block_ids": [list(range(first, first + nblocks))],
            "remote_engine_id": self.engine_uuid,
            "remote_request_id": f"{gen.rid}-0-{self._ids.getrandbits(32):08x}",
            "remote_host": self.settings.kv_host,
            "remote_port": self.settings.kv_port,
            "tp_size": 1,
            "dcp_size": 1,
            "pp_size": 1,
            "remote_num_tokens": len(gen.prompt_ids),
            "remote_blocks_expiry_time": None,
            "transfer_mode": "pull",
            "remote_prefill_cached_tokens": fin.cached_tokens,
        }

    async def _stream(
        self, request: web.Request, gen: _Gen, stream: RequestStream, hang_after: int | None
    ) -> tuple[web.StreamResponse, bool]:
        """Write SSE chunks as the engine produces tokens; returns (response, finished)."""
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"}
        )
        await resp.prepare(request)
        fmt = self.formatter
        created = self._created()
        digest = prompt_digest(gen.prompt_ids)
        seed = self.settings.seed
        sent = 0
        chunk = fmt.chat_chunk if gen.chat else fmt.completion_chunk
        while True:
            ev = await stream.queue.get()
            if ev.finished is not None:
                if gen.include_usage:
                    usage = fmt.usage_chunk(gen.chat, gen.rid, created, len(gen.prompt_ids), sent)
                    await resp.write(usage)
                await resp.write(SSE_DONE)
                await resp.write_eof()
                return resp, True
            parts: list[bytes] = []
            for _ in range(ev.count):
                if sent == 0 and gen.chat:
                    parts.append(fmt.chat_role_chunk(gen.rid, created))
                text = generated_text(seed, digest, sent, 1)
                sent += 1
                finish = "length" if sent >= gen.max_tokens else None
                parts.append(chunk(gen.rid, created, text, finish))
            # a client that went away makes this raise; _generate's finally aborts
            await resp.write(b"".join(parts))
            if hang_after is not None and sent >= hang_after:
                await asyncio.Event().wait()  # stall mid-stream until the client leaves
