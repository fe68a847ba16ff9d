"""OpenAI request bodies in, vLLM 0.32-shaped bytes out.

Everything a client or the gateway can observe is here, so the byte format is
pinned against the real captures in shared/fixtures/vllm-0.32.0 (key order,
``null`` fields, compact separators, the usage chunk and ``data: [DONE]``).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SSE_DONE = b"data: [DONE]\n\n"

M = TypeVar("M", bound="BaseModel")


class OpenAIError(Exception):
    """An error mapped to an OpenAI-style JSON body at the HTTP edge."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    @property
    def type_name(self) -> str:
        return {
            400: "BadRequestError",
            404: "NotFoundError",
            413: "RequestEntityTooLargeError",
            500: "InternalServerError",
            503: "ServiceUnavailableError",
        }.get(self.status, "Error")

    def body(self) -> bytes:
        return dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type_name,
                    "param": self.param,
                    "code": self.status,
                }
            }
        )


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class _Common(BaseModel):
    """Fields both endpoints share. Unknown sampling params are accepted and ignored,
    as vLLM does; types of known ones are checked."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = Field(default=1, ge=1)
    ignore_eos: bool = False
    kv_transfer_params: dict[str, Any] | None = None
    request_id: str | None = None
    hash_ids: list[int] | None = None
    """Sim extension: Mooncake-style prefix-block ids (512 tokens each) for the prefix cache."""


class CompletionBody(_Common):
    prompt: str | list[int] | list[str] | list[list[int]]


class ChatBody(_Common):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


def parse_body(raw: bytes, model: type[M]) -> M:
    """JSON bytes → validated body, or a 400 OpenAIError naming the offending field."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OpenAIError(400, f"Invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "Request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise OpenAIError(400, f"{loc}: {err['msg']}", param=loc or None) from None


class Formatter:
    """Builds response bytes for one server (model name and fingerprint are fixed)."""

    def __init__(self, model: str, system_fingerprint: str) -> None:
        self.model = model
        self.fingerprint = system_fingerprint

    def completion_chunk(self, rid: str, created: int, text: str, finish: str | None) -> bytes:
        choice: dict[str, Any] = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
            "prompt_token_ids": None,
            "token_ids": None,
        }
        return self._sse(
            {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": self.model,
                "choices": [choice],
            }
        )

    def chat_role_chunk(self, rid: str, created: int) -> bytes:
        return self._sse(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
                "prompt_token_ids": None,
                "prompt_text": None,
            }
        )

    def chat_chunk(self, rid: str, created: int, text: str, finish: str | None) -> bytes:
        choice: dict[str, Any] = {
            "index": 0,
            "delta": {"content": text},
            "logprobs": None,
            "finish_reason": finish,
        }
        if finish is not None:
            choice["stop_reason"] = None
        choice["token_ids"] = None
        return self._sse(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [choice],
            }
        )

    def usage_chunk(
        self, chat: bool, rid: str, created: int, prompt: int, completion: int
    ) -> bytes:
        return self._sse(
            {
                "id": rid,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": self.model,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "total_tokens": prompt + completion,
                    "completion_tokens": completion,
                },
                "system_fingerprint": self.fingerprint,
            }
        )

    def _usage(self, prompt: int, completion: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        }

    def completion_body(
        self,
        rid: str,
        created: int,
        text: str,
        finish: str,
        prompt: int,
        completion: int,
        kv_transfer_params: dict[str, Any] | None,
    ) -> bytes:
        return dumps(
            {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": finish,
                        "stop_reason": None,
                        "token_ids": None,
                        "prompt_logprobs": None,
                        "prompt_token_ids": None,
                        "routed_experts": None,
                    }
                ],
                "service_tier": None,
                "system_fingerprint": self.fingerprint,
                "usage": self._usage(prompt, completion),
                "kv_transfer_params": kv_transfer_params,
                "ec_transfer_params": None,
                "metrics": None,
            }
        )

    def chat_body(
        self,
        rid: str,
        created: int,
        text: str,
        finish: str,
        prompt: int,
        completion: int,
        kv_transfer_params: dict[str, Any] | None,
    ) -> bytes:
        return dumps(
            {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "refusal": None,
                            "annotations": None,
                            "audio": None,
                            "function_call": None,
                            "tool_calls": [],
                            "reasoning": None,
                        },
                        "logprobs": None,
                        "finish_reason": finish,
                        "stop_reason": None,
                        "token_ids": None,
                    }
                ],
                "service_tier": None,
                "system_fingerprint": self.fingerprint,
                "usage": self._usage(prompt, completion),
                "prompt_logprobs": None,
                "prompt_token_ids": None,
                "kv_transfer_params": kv_transfer_params,
            }
        )

    @staticmethod
    def _sse(obj: dict[str, Any]) -> bytes:
        return b"data: " + dumps(obj) + b"\n\n"
