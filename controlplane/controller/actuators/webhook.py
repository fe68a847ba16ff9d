"""Webhook actuator: POST the absolute targets as JSON to a URL, with retries.

Body: ``{"cluster", "desired": {role: n}, "observed", "remove_workers", "reasons"}``.
A 2xx answer is success; 5xx, 429 and connection errors are retried with
exponential backoff; other 4xx are final (the receiver rejected the request).
The ``Idempotency-Key`` header is stable for one decision so a receiver can drop
duplicates from retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from controlplane.controller.actuators.base import ActuationResult
from controlplane.policy.planner.types import ScaleDecision

log = logging.getLogger(__name__)


class WebhookParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(min_length=1)
    timeout_s: float = Field(default=5.0, gt=0)
    retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    headers: dict[str, str] = Field(default_factory=dict)


def decision_body(cluster: str, d: ScaleDecision) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "desired": dict(d.desired),
        "observed": dict(d.observed),
        "remove_workers": {r: list(ws) for r, ws in d.remove_workers.items()},
        "reasons": dict(d.reasons),
    }


class WebhookActuator:
    name = "webhook"

    def __init__(self, params: WebhookParams, cluster: str = "default") -> None:
        self.p = params
        self.cluster = cluster
        self._session: aiohttp.ClientSession | None = None

    async def apply(self, decision: ScaleDecision) -> ActuationResult:
        body = decision_body(self.cluster, decision)
        raw = json.dumps(body, sort_keys=True)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": hashlib.sha256(raw.encode()).hexdigest()[:32],
            **self.p.headers,
        }
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.p.timeout_s)
            )
        detail = ""
        for attempt in range(self.p.retries + 1):
            try:
                async with self._session.post(self.p.url, data=raw, headers=headers) as resp:
                    if 200 <= resp.status < 300:
                        return ActuationResult(True, dict(decision.desired), f"http {resp.status}")
                    detail = f"http {resp.status}"
                    if resp.status < 500 and resp.status != 429:
                        return ActuationResult(False, {}, detail)
            except (aiohttp.ClientError, TimeoutError) as exc:
                detail = f"{type(exc).__name__}: {exc}"
            if attempt < self.p.retries:
                await asyncio.sleep(self.p.backoff_s * 2**attempt)
        log.warning("webhook failed", extra={"url": self.p.url, "detail": detail})
        return ActuationResult(False, {}, detail)

    async def current_replicas(self) -> Mapping[str, int] | None:
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
