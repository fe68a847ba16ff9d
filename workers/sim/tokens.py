"""Deterministic, cheap stand-ins for a tokenizer and a model's sampled text.

The sim must never load a real tokenizer, yet prompt lengths must be plausible,
identical prompts must hit the prefix cache, and a test must be able to compare a
direct stream with a proxied one byte for byte. So: token ids are CRC32s of
words (+ a BOS id, like Llama), and generated token ``j`` of a prompt is a pure
function of (seed, prompt ids, j).
"""

from __future__ import annotations

import re
import zlib
from array import array
from collections.abc import Sequence
from typing import Any

VOCAB_SIZE = 128_256
BOS_ID = 128_000
_WORD = re.compile(r"\w+|[^\w\s]")
_WORDS = (
    " the", " of", " and", " to", " a", " in", " is", " that", " for", " it", " as", " with",
    " was", " on", " be", " by", " this", " are", " from", " at", " or", " an", " which",
    " model", " token", " cache", " block", " request", " latency", " batch", " decode",
    " prefill", " worker", " queue", " time", " data", " system", " value", " first", " next",
    ".", ",", ":", "\n", " we", " can", " will", " not", " more", " each", " one", " two",
)  # fmt: skip


def tokenize(text: str) -> list[int]:
    """BOS + one id per word or punctuation mark (roughly a BPE count for English)."""
    return [BOS_ID, *(zlib.crc32(w.encode()) % BOS_ID for w in _WORD.findall(text))]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("text")
        )
    return ""


def chat_prompt(messages: Sequence[dict[str, Any]]) -> str:
    """A Llama-3-like chat template, so chat prompts cost template tokens too."""
    parts = [
        f"<|start_header_id|>{m.get('role', 'user')}<|end_header_id|>\n\n"
        f"{_content_text(m.get('content'))}<|eot_id|>"
        for m in messages
    ]
    return "<|begin_of_text|>" + "".join(parts) + "<|start_header_id|>assistant<|end_header_id|>"


def prompt_digest(ids: Sequence[int]) -> int:
    """32-bit digest of a prompt's ids: the seed of its generated text."""
    return zlib.crc32(array("q", ids).tobytes())


def token_text(seed: int, digest: int, index: int) -> str:
    """Text of generated token ``index`` (0-based) for a prompt with ``digest``."""
    x = (digest * 0x9E3779B1 + index * 0x85EBCA77 + seed * 0xC2B2AE3D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    return _WORDS[x % len(_WORDS)]


def generated_text(seed: int, digest: int, start: int, count: int) -> str:
    return "".join(token_text(seed, digest, i) for i in range(start, start + count))
