"""Talking to workers, behind one narrow interface (``WorkerClient``).

Failures are classified here, once: connect errors, timeouts before the first
byte and 5xx become retryable ``UpstreamError``; a 4xx is the request's own fault
and becomes ``ClientRejected`` (relayed, never retried).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp

from controlplane.errors import ClientRejected, UpstreamError, UpstreamTimeout


class UpstreamStream(Protocol):
    status: int
    content_type: str

    def chunks(self) -> AsyncIterator[bytes]: ...
    def close(self) -> None: ...


class WorkerClient(Protocol):
    async def post_json(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST and return the parsed JSON body (non-streaming)."""
        ...

    async def open_stream(self, url: str, body: dict[str, Any] | bytes) -> UpstreamStream:
        """POST and return once the response headers are in (status already checked).

        ``bytes`` are sent as they are: a one-hop request is forwarded without being
        serialised again (the client's JSON is already valid, the gateway parsed it)."""
        ...

    async def get_json(self, url: str, timeout_s: float) -> Any: ...
    async def close(self) -> None: ...


_JSON = {"Content-Type": "application/json"}


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


class _AiohttpStream:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.status = resp.status
        self.content_type = resp.headers.get("Content-Type", "application/json")

    async def chunks(self) -> AsyncIterator[bytes]:
        async for data in self.resp.content.iter_any():
            yield data

    def close(self) -> None:
        self.resp.close()  # closes the connection: the worker sees the abort


class AiohttpWorkerClient:
    def __init__(
        self,
        connect_timeout_s: float = 2.0,
        first_byte_timeout_s: float = 60.0,
        request_timeout_s: float = 600.0,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout_s, sock_connect=connect_timeout_s, sock_read=first_byte_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None:
            conn = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                connector=conn, timeout=self._timeout, auto_decompress=False,
                json_serialize=_dumps,
            )  # fmt: skip
        return self._session

    async def _post(self, url: str, body: dict[str, Any] | bytes) -> aiohttp.ClientResponse:
        data = body if isinstance(body, bytes) else _dumps(body).encode()
        try:
            resp = await self._s().post(url, data=data, headers=_JSON)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"timeout before first byte from {url}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach {url}: {exc.__class__.__name__}") from exc
        if resp.status >= 500:
            text = (await resp.read())[:300].decode("utf-8", "replace")
            resp.release()
            raise UpstreamError(
                f"{url} answered {resp.status}: {text}", upstream_status=resp.status
            )
        if resp.status >= 400:
            raw = await resp.read()
            resp.release()
            raise ClientRejected(
                f"worker rejected the request ({resp.status})", status=resp.status, body=raw
            )
        return resp

    async def post_json(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self._post(url, body)
        try:
            data = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise UpstreamError(f"bad response from {url}: {exc.__class__.__name__}") from exc
        finally:
            resp.release()
        if not isinstance(data, dict):
            raise UpstreamError(f"bad response from {url}: not a JSON object")
        return data

    async def open_stream(self, url: str, body: dict[str, Any] | bytes) -> UpstreamStream:
        return _AiohttpStream(await self._post(url, body))

    async def get_json(self, url: str, timeout_s: float) -> Any:
        try:
            async with self._s().get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                if r.status != 200:
                    raise UpstreamError(f"{url} answered {r.status}", upstream_status=r.status)
                ctype = r.headers.get("Content-Type", "")
                return await r.json(content_type=None) if "json" in ctype else await r.text()
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise UpstreamError(f"cannot reach {url}: {exc.__class__.__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
