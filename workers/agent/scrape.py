"""Fetching a worker's /metrics page: one keep-alive aiohttp session per agent.

Behind the narrow ``PageSource`` protocol so the loop can be driven by a saved
page or a fake in tests without sockets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

import aiohttp


class ScrapeError(Exception):
    """The page could not be fetched; ``kind`` is the ``result`` label (timeout|error|http)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class PageSource(Protocol):
    async def fetch(self) -> str:
        """Return the page text or raise ScrapeError."""
        ...

    async def close(self) -> None: ...


def metrics_url(worker_url: str) -> str:
    """``http://host:port`` → ``http://host:port/metrics`` (a full /metrics URL is kept)."""
    url = worker_url.rstrip("/")
    return url if url.endswith("/metrics") else f"{url}/metrics"


class HttpPageSource:
    """GET /metrics with a reused connection and a hard timeout below the scrape interval,
    so one hung worker can never make the agent skip its own heartbeat."""

    def __init__(self, worker_url: str, timeout_s: float) -> None:
        self.url = metrics_url(worker_url)
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=1, keepalive_timeout=30.0),
            )
        return self._session

    async def fetch(self) -> str:
        session = self._get_session()
        try:
            async with session.get(self.url) as resp:
                if resp.status != 200:
                    raise ScrapeError("http", f"HTTP {resp.status} from {self.url}")
                return await resp.text()
        except TimeoutError as exc:
            raise ScrapeError("timeout", f"no answer from {self.url} in {self.timeout_s}s") from exc
        except (aiohttp.ClientError, OSError, UnicodeDecodeError) as exc:
            raise ScrapeError("error", f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class FilePageSource:
    """A saved page (``--from-file``); re-read at each fetch so a test can change it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def fetch(self) -> str:
        try:
            return await asyncio.to_thread(self.path.read_text, encoding="utf-8")
        except OSError as exc:
            raise ScrapeError("error", str(exc)) from exc

    async def close(self) -> None:
        return None
