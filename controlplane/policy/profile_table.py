"""A worker latency profile as a small interpolation table (prefill and decode steps).

Parses both profile formats in the repository (shared/fixtures/vllm-0.32.0/profile.csv
and shared/profiles/*.csv) from text, so the policy core needs no file I/O; the
driver reads the file. Interpolation is piecewise linear and extrapolates linearly
from the last segment, because real latency keeps growing past the measured range.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


def _interp(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Linear between points; held below the first point; last segment continued above."""
    if len(xs) == 1 or x <= xs[0]:
        return ys[0]
    i = bisect.bisect_left(xs, x)
    if i >= len(xs):
        i = len(xs) - 1
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return y if y > 0.0 else 0.0


def _interp_many(
    xs: Sequence[float], ys: Sequence[float], x: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    """``_interp`` over an array of x, with the same arithmetic (same results bit for bit)."""
    if len(xs) == 1:
        return np.full(x.shape, ys[0], np.float64)
    xa, ya = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    i = np.clip(np.searchsorted(xa, x, "left"), 1, len(xs) - 1)
    x0, x1, y0, y1 = xa[i - 1], xa[i], ya[i - 1], ya[i]
    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    out: npt.NDArray[np.float64] = np.where(x <= xs[0], ys[0], np.where(y > 0.0, y, 0.0))
    return out


@dataclass(frozen=True)
class LatencyProfile:
    """Prefill latency by prompt tokens; decode step latency by (batch, context)."""

    prefill_tokens: tuple[float, ...]
    prefill_latency_ms: tuple[float, ...]
    decode_batches: tuple[float, ...]
    decode_contexts: tuple[float, ...]
    decode_grid_ms: tuple[tuple[float, ...], ...]  # [batch index][context index]
    kv_capacity_tokens: int | None = None
    name: str = ""
    _rows: dict[float, list[float]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    """Per-context decode rows, memoised: a routing decision asks many batches at one context."""

    def prefill_ms(self, tokens: float, prefix_tokens: float = 0.0) -> float:
        """Prefill time of ``tokens`` new tokens (a cached prefix is treated as free here)."""
        if tokens <= 0:
            return 0.0
        return _interp(self.prefill_tokens, self.prefill_latency_ms, tokens)

    def decode_ms(self, batch: float, context_tokens: float) -> float:
        batch = max(1.0, batch)
        return _interp(self.decode_batches, self._row(context_tokens), batch)

    def decode_ms_many(
        self, batches: npt.NDArray[Any], context_tokens: float
    ) -> npt.NDArray[np.float64]:
        """``decode_ms`` for many batch sizes at one context (vectorised routing)."""
        x = np.maximum(1.0, batches.astype(np.float64))
        return _interp_many(self.decode_batches, self._row(context_tokens), x)

    def _row(self, context_tokens: float) -> list[float]:
        row = self._rows.get(context_tokens)
        if row is None:
            if len(self._rows) > 1024:
                self._rows.clear()
            row = self._rows[context_tokens] = [
                _interp(self.decode_contexts, r, context_tokens) for r in self.decode_grid_ms
            ]
        return row

    @classmethod
    def from_points(
        cls,
        prefill: Sequence[tuple[float, float]],
        decode: Sequence[tuple[float, float, float]],
        *,
        kv_capacity_tokens: int | None = None,
        name: str = "",
    ) -> LatencyProfile:
        """``prefill`` = (tokens, ms); ``decode`` = (batch, context, ms), a possibly sparse grid."""
        if not prefill or not decode:
            raise ValueError("a profile needs at least one prefill and one decode point")
        pf = sorted(set(prefill))
        batches = sorted({b for b, _, _ in decode})
        contexts = sorted({c for _, c, _ in decode})
        grid: list[tuple[float, ...]] = []
        for b in batches:
            pts = sorted((c, ms) for bb, c, ms in decode if bb == b)
            cs, ms_ = [c for c, _ in pts], [m for _, m in pts]
            grid.append(tuple(_interp(cs, ms_, c) for c in contexts))
        return cls(
            prefill_tokens=tuple(float(t) for t, _ in pf),
            prefill_latency_ms=tuple(float(m) for _, m in pf),
            decode_batches=tuple(float(b) for b in batches),
            decode_contexts=tuple(float(c) for c in contexts),
            decode_grid_ms=tuple(grid),
            kv_capacity_tokens=kv_capacity_tokens,
            name=name,
        )

    @classmethod
    def from_csv_text(cls, text: str, *, name: str = "") -> LatencyProfile:
        """Read either repository format: ``phase,batch_size,context_tokens_or_prompt_tokens,
        latency_ms`` or ``kind,batch_size,tokens_or_context,prefix_cached,latency_ms``."""
        prefill: list[tuple[float, float]] = []
        decode: list[tuple[float, float, float]] = []
        for row in csv.DictReader(io.StringIO(text)):
            kind = row.get("phase") or row.get("kind") or ""
            n = float(
                row.get("context_tokens_or_prompt_tokens") or row.get("tokens_or_context") or 0
            )
            ms = float(row["latency_ms"])
            if kind == "prefill" and int(float(row.get("batch_size") or 1)) == 1:
                prefill.append((n, ms))
            elif kind in ("decode", "decode_step"):
                decode.append((float(row["batch_size"]), n, ms))
        return cls.from_points(prefill, decode, name=name)


CPU_TINY_PROFILE = LatencyProfile.from_points(
    # shared/fixtures/vllm-0.32.0/profile.csv = sim profile `cpu-tiny-fixture` (not `cpu-tiny`)
    prefill=[(64, 12.72), (256, 23.87), (1024, 92.64), (2048, 226.36)],
    decode=[
        (1, 128, 2.45), (2, 128, 2.7), (4, 128, 3.72), (8, 128, 5.16),
        (1, 1024, 3.5), (2, 1024, 4.95), (4, 1024, 7.36), (8, 1024, 11.32),
    ],
    kv_capacity_tokens=131_072,
    name="cpu-tiny-llama",
)  # fmt: skip
"""Default table until a driver passes a profile (``--profile`` in the gateway)."""
