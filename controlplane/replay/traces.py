"""Trace readers: Azure LLM inference CSV and Mooncake JSONL into one request list.

Both public traces (shared/traces/) become a list of ``TraceRequest`` with
arrival times in seconds from the first arrival, so everything downstream is
format-blind. Rate scaling divides arrival times (the same requests arrive
``scale`` times faster, the mix is unchanged), which is how DistServe-style goodput
sweeps are defined; a time window is cut before scaling so it is given in trace
seconds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

MOONCAKE_BLOCK_TOKENS = 512
"""Tokens per Mooncake ``hash_id`` (one id per 512-token block of the input)."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace; ``hash_ids`` are prefix-block ids (empty when unknown)."""

    index: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Trace:
    """Requests sorted by arrival plus where they came from; ``block_tokens`` is the
    token span of one ``hash_ids`` entry (0 when the trace has none)."""

    name: str
    requests: tuple[TraceRequest, ...]
    block_tokens: int = 0

    @property
    def duration_s(self) -> float:
        if len(self.requests) < 2:
            return 0.0
        return self.requests[-1].arrival_s - self.requests[0].arrival_s

    @property
    def mean_rate_rps(self) -> float:
        """Rows / duration, the README's definition (0 for a single request)."""
        d = self.duration_s
        return len(self.requests) / d if d > 0 else 0.0


def _parse_azure_ts(s: str) -> tuple[int, float]:
    """``YYYY-MM-DD HH:MM:SS.fffffff`` (7 fractional digits) → (whole POSIX seconds,
    fraction), kept apart so re-basing keeps the 100 ns resolution."""
    s = s.strip()
    whole, _, frac = s.partition(".")
    base = int(datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").timestamp())
    return base, (float("0." + frac) if frac else 0.0)


def read_azure(path: Path) -> Trace:
    """Azure LLM inference 2023 CSV: TIMESTAMP, ContextTokens, GeneratedTokens."""
    rows: list[tuple[float, int, int]] = []
    base0: int | None = None
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            whole, frac = _parse_azure_ts(row["TIMESTAMP"])
            base0 = whole if base0 is None else base0
            rows.append(
                (
                    (whole - base0) + frac,
                    int(row["ContextTokens"]),
                    int(row["GeneratedTokens"]),
                )
            )
    return _build(path.stem, rows, [()] * len(rows), 0)


def read_mooncake(path: Path) -> Trace:
    """Mooncake JSONL: timestamp (ms), input_length, output_length, hash_ids."""
    rows: list[tuple[float, int, int]] = []
    hashes: list[tuple[int, ...]] = []
    with path.open() as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            rows.append(
                (float(d["timestamp"]) / 1000.0, int(d["input_length"]), int(d["output_length"]))
            )
            hashes.append(tuple(int(h) for h in d.get("hash_ids") or ()))
    return _build(path.stem, rows, hashes, MOONCAKE_BLOCK_TOKENS)


def _build(
    name: str,
    rows: Sequence[tuple[float, int, int]],
    hashes: Sequence[tuple[int, ...]],
    block_tokens: int,
) -> Trace:
    if not rows:
        raise ValueError(f"trace {name}: no requests")
    order = sorted(range(len(rows)), key=lambda i: rows[i][0])  # stable for equal times
    t0 = rows[order[0]][0]
    reqs = tuple(
        TraceRequest(
            index=k,
            arrival_s=rows[i][0] - t0,
            prompt_tokens=max(1, rows[i][1]),
            output_tokens=max(1, rows[i][2]),
            hash_ids=hashes[i],
        )
        for k, i in enumerate(order)
    )
    return Trace(name, reqs, block_tokens if any(hashes) else 0)


def detect_format(path: Path) -> str:
    """``azure`` or ``mooncake`` from the first non-empty line."""
    with path.open() as f:
        for line in f:
            s = line.strip()
            if not s:
                continue
            if s.startswith("{"):
                return "mooncake"
            if "TIMESTAMP" in s and "ContextTokens" in s:
                return "azure"
            break
    raise ValueError(f"{path}: cannot tell the trace format (want Azure CSV or Mooncake JSONL)")


def read_trace(path: Path | str, fmt: str = "auto") -> Trace:
    p = Path(path)
    kind = detect_format(p) if fmt == "auto" else fmt
    if kind == "azure":
        return read_azure(p)
    if kind == "mooncake":
        return read_mooncake(p)
    raise ValueError(f"unknown trace format {fmt!r} (auto | azure | mooncake)")


def window(trace: Trace, start_s: float = 0.0, end_s: float | None = None) -> Trace:
    """Requests arriving in [start_s, end_s) trace-seconds, re-based to start at 0."""
    picked = [
        r
        for r in trace.requests
        if r.arrival_s >= start_s and (end_s is None or r.arrival_s < end_s)
    ]
    if not picked:
        raise ValueError(f"trace {trace.name}: window [{start_s}, {end_s}) holds no request")
    t0 = picked[0].arrival_s
    reqs = tuple(replace(r, index=k, arrival_s=r.arrival_s - t0) for k, r in enumerate(picked))
    return Trace(trace.name, reqs, trace.block_tokens)


def scale_rate(trace: Trace, rate_scale: float) -> Trace:
    """Same requests, arrivals ``rate_scale`` times denser (``2`` = twice the request rate)."""
    if rate_scale <= 0:
        raise ValueError("rate_scale must be positive")
    if rate_scale == 1.0:
        return trace
    reqs = tuple(replace(r, arrival_s=r.arrival_s / rate_scale) for r in trace.requests)
    return Trace(trace.name, reqs, trace.block_tokens)


def parse_window(spec: str | None) -> tuple[float, float | None]:
    """``"600:1200"`` / ``"600:"`` / ``":900"`` / ``"900"`` (= ``:900``) → (start_s, end_s)."""
    if not spec:
        return 0.0, None
    if ":" not in spec:
        return 0.0, float(spec)
    a, b = spec.split(":", 1)
    return (float(a) if a else 0.0), (float(b) if b else None)


def token_totals(reqs: Iterable[TraceRequest]) -> tuple[int, int]:
    """(prompt tokens, output tokens) summed over ``reqs``."""
    p = o = 0
    for r in reqs:
        p += r.prompt_tokens
        o += r.output_tokens
    return p, o
