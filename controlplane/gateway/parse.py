"""Request body parsing and validation for the OpenAI endpoints.

Only what the gateway needs is checked (model, prompt/messages, max_tokens, stream
flags); everything else is passed through untouched for the worker to judge.
Token counts are estimates (~4 characters per token, no tokenizer here) used for
tpm limits, prediction and prefix affinity, never for billing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from controlplane.errors import BadRequest, InvalidJSON, ValidationFailed
from controlplane.policy.request.prefix import (
    CHARS_PER_TOKEN,
    block_hashes_from_text,
    block_hashes_from_tokens,
)

DEFAULT_MAX_TOKENS_ESTIMATE = 256


@dataclass(slots=True)
class ParsedRequest:
    kind: str  # "completions" | "chat"
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    prompt_tokens: int
    max_tokens: int
    block_hashes: tuple[int, ...] = field(default=())
    raw: bytes = b""
    """The body as the client sent it, forwarded unchanged on one-hop requests."""

    @property
    def path(self) -> str:
        return "/v1/completions" if self.kind == "completions" else "/v1/chat/completions"


def _int_field(body: dict[str, Any], name: str) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValidationFailed(f"'{name}' must be an integer", param=name, code="invalid_type")
    if v < 1:
        raise ValidationFailed(f"'{name}' must be at least 1", param=name)
    return v


def _text_tokens(text: str) -> int:
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def _is_token_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)


def parse_body(raw: bytes, kind: str, block_tokens: int = 16) -> ParsedRequest:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationFailed("Request body must be a JSON object", code="invalid_type")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValidationFailed("'model' is required and must be a string", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ValidationFailed("'stream' must be a boolean", param="stream", code="invalid_type")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise ValidationFailed("'stream_options' must be an object", param="stream_options")
    include_usage = bool(so and so.get("include_usage"))
    if "kv_transfer_params" in body:
        # only the gateway may set it: from a client it could pin KV blocks on a worker
        # (do_remote_decode) or point a NIXL decode worker at any host (remote_host/port)
        raise BadRequest(
            "'kv_transfer_params' is set by the gateway for disaggregated serving; "
            "clients may not send it",
            param="kv_transfer_params",
            code="unsupported_parameter",
        )
    max_tokens = _int_field(body, "max_tokens")
    if kind == "chat":
        max_tokens = _int_field(body, "max_completion_tokens") or max_tokens
        prompt_tokens, hashes = _chat_prompt(body, block_tokens)
    else:
        prompt_tokens, hashes = _completion_prompt(body, block_tokens)
    return ParsedRequest(
        kind, body, model, stream, include_usage, prompt_tokens,
        max_tokens or DEFAULT_MAX_TOKENS_ESTIMATE, hashes, raw,
    )  # fmt: skip


def _completion_prompt(body: dict[str, Any], block_tokens: int) -> tuple[int, tuple[int, ...]]:
    p = body.get("prompt")
    if isinstance(p, str) and p:
        return _text_tokens(p), block_hashes_from_text(p, block_tokens)
    if _is_token_list(p) and p:
        return len(p), block_hashes_from_tokens(p, block_tokens)
    if isinstance(p, list) and p and all(isinstance(x, str) for x in p):
        return sum(_text_tokens(x) for x in p), block_hashes_from_text(p[0], block_tokens)
    if isinstance(p, list) and p and all(_is_token_list(x) and x for x in p):
        return sum(len(x) for x in p), block_hashes_from_tokens(p[0], block_tokens)
    raise ValidationFailed(
        "'prompt' is required: a non-empty string, list of strings, or token id list(s)",
        param="prompt",
    )


def _chat_prompt(body: dict[str, Any], block_tokens: int) -> tuple[int, tuple[int, ...]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ValidationFailed(
            "'messages' is required and must be a non-empty list", param="messages"
        )
    parts: list[str] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValidationFailed(
                f"messages[{i}] must be an object with a 'role'", param="messages"
            )
        c = m.get("content")
        if isinstance(c, str):
            text = c
        elif isinstance(c, list):
            text = "".join(str(x.get("text", "")) for x in c if isinstance(x, dict))
        elif c is None:
            text = ""
        else:
            raise ValidationFailed(f"messages[{i}].content has the wrong type", param="messages")
        parts.append(f"{m['role']}:{text}\n")
    joined = "".join(parts)
    return _text_tokens(joined) + 4 * len(msgs), block_hashes_from_text(joined, block_tokens)
