"""Latency profiles: measured per-step times of a real engine, and interpolation over them.

The one step-time model of the project: the simulated worker's engine, the
predictor, the planner, the replay and the profiler all read this ``Profile``.
The model is data, not code: a CSV of measured points (prefill time by prompt
tokens, decode step time by batch size and context) plus the engine limits the
measurement was taken with. The shipped CSVs sit beside this module
(``controlplane/profiles/*.csv``, see the README there). Two CSV dialects are read
because the two shipped sources differ:

* ``kind,batch_size,tokens_or_context,prefix_cached,latency_ms`` (aiconfigurator
  export: ``prefill``, ``prefill_with_prefix``, ``decode_step``);
* ``phase,batch_size,context_tokens_or_prompt_tokens,latency_ms`` (the vLLM CPU
  capture: ``prefill``, ``decode``).

Either dialect may carry the P/D connector's engine costs as measured points (both
optional; a profile without them prices P/D exactly as a plain server):

* ``kv_save`` rows (batch, prompt tokens → extra ms): what a prefill costs more on a
  P/D producer than on a plain server (the connector writes the prompt's KV);
* ``kv_load`` rows (co-running batch, loaded tokens → extra ms): what the decode
  engine's step costs more when a request whose KV comes from a prefill worker is
  admitted in it (the load runs inside the step and stalls every co-running stream).

Each is fitted at load time to ``base + per_token x tokens`` (Theil-Sen, both
clamped at 0), so the file keeps the measured points and the engine a linear term.
The header may instead declare the term directly (``kv_save_base_ms=``,
``kv_save_ms_per_token=``, ``kv_load_base_ms=``, ``kv_load_ms_per_token=``, e.g. a
cited number with no rows behind it); a declared value wins over the rows.

``decode_scale=`` in the header (default 1) multiplies every decode step: the
measured slowdown of decode steps on a deployment whose engines share cores with
other engines (two vLLM EngineCores, their API servers, a gateway and a client on
two CPU cores) against the rows, which were measured on a server alone.

An optional first line ``# slaplane-profile key=value ...`` carries the engine
limits (KV capacity, block size, scheduler budget); the data rows below it are
byte-identical to their source so provenance stays checkable.

Interpolation is piecewise linear between grid points (the grids are
log-spaced, so each segment is short relative to its position). Below the grid
the first value is held (small steps are overhead-dominated); above it prefill
follows the last segment's power law and decode continues the last segment
linearly (decode cost grows ~linearly in batch x context).

Routers ask one context for many batch sizes: ``decode_row`` (memoised per context)
and ``decode_ms_many`` give the same numbers as ``decode_ms``, bit for bit.
"""

from __future__ import annotations

import csv
import math
import statistics
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

PROFILES_DIR = Path(__file__).parent
"""Where the shipped profiles live (package data, next to this module)."""


def _interp_linear(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear y(x); held below the grid, linear continuation above it."""
    if len(xs) == 1 or x <= xs[0]:
        return ys[0]
    i = bisect_right(xs, x)
    if i >= len(xs):
        i = len(xs) - 1
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return max(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 0.0)


def _interp_power_above(xs: list[float], ys: list[float], x: float) -> float:
    """Linear inside the grid; above it, the last segment's log-log slope (a power law)."""
    if x <= xs[-1] or len(xs) == 1:
        return _interp_linear(xs, ys, x)
    x0, x1, y0, y1 = xs[-2], xs[-1], ys[-2], ys[-1]
    if y0 <= 0 or y1 <= 0:
        return _interp_linear(xs, ys, x)
    slope = math.log(y1 / y0) / math.log(x1 / x0)
    return float(y1 * (x / x1) ** max(slope, 0.0))


def _interp_linear_many(
    xs: list[float], ys: list[float], x: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    """``_interp_linear`` over an array of x, with the same arithmetic (bit for bit)."""
    import numpy as np  # only the vectorised routing path needs it; the sim worker does not

    if len(xs) == 1:
        return np.full(x.shape, ys[0], np.float64)
    xa, ya = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    i = np.clip(np.searchsorted(xa, x, "right"), 1, len(xs) - 1)
    x0, x1, y0, y1 = xa[i - 1], xa[i], ya[i - 1], ya[i]
    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    out: npt.NDArray[np.float64] = np.where(x <= xs[0], ys[0], np.where(y > 0.0, y, 0.0))
    return out


class _Limits(TypedDict, total=False):
    """Engine limits a profile carries (the CSV header's integer keys)."""

    kv_capacity_tokens: int
    block_size: int
    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int


_ROWS_KEPT = 1024
"""Memoised decode rows per profile (one per distinct context asked)."""


@dataclass(frozen=True, slots=True)
class Profile:
    """Measured step times plus the engine limits they were measured with.

    ``prefill_ms`` / ``decode_ms`` are the only things the engine asks of it.
    """

    name: str
    model: str
    prefill_tokens: list[float]
    prefill_latency_ms: list[float]
    decode_batches: list[float]
    decode_contexts: list[list[float]]
    decode_latency_ms: list[list[float]]
    prefix_grid: dict[float, tuple[list[float], list[float]]] = field(default_factory=dict)
    kv_capacity_tokens: int = 131072
    block_size: int = 16
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 128
    max_model_len: int = 4096
    kv_save_base_ms: float = 0.0
    kv_save_ms_per_token: float = 0.0
    kv_load_base_ms: float = 0.0
    kv_load_ms_per_token: float = 0.0
    decode_scale: float = 1.0
    _rows: dict[float, list[float]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    """``decode_row`` memo: a routing decision asks many batches at one context."""

    @classmethod
    def from_points(
        cls,
        prefill: Iterable[tuple[float, float]],
        decode: Iterable[tuple[float, float, float]],
        *,
        name: str = "custom",
        model: str | None = None,
        **limits: Unpack[_Limits],
    ) -> Profile:
        """A profile from measured points instead of CSV text: ``prefill`` = (prompt
        tokens, ms), ``decode`` = (batch, context, ms), a grid that may be sparse;
        ``limits`` are the engine limits (``kv_capacity_tokens=``, ``block_size=`` ...).
        Cleaned as ``parse_profile`` cleans a CSV (sorted, made monotone)."""
        pf = {float(t): float(ms) for t, ms in prefill}
        dec: dict[float, dict[float, float]] = {}
        for b, c, ms in decode:
            dec.setdefault(float(b), {})[float(c)] = float(ms)
        grids = _grids(pf, dec, name)
        return cls(name=name, model=model or name, **grids, **limits)

    @property
    def has_pd_terms(self) -> bool:
        """Whether the P/D connector costs anything on the engine (see module doc)."""
        return (
            self.kv_save_base_ms > 0
            or self.kv_save_ms_per_token > 0
            or self.kv_load_base_ms > 0
            or self.kv_load_ms_per_token > 0
        )

    def kv_save_ms(self, tokens: float) -> float:
        """Extra step time of prefilling ``tokens`` prompt tokens on a P/D producer."""
        if tokens <= 0:
            return 0.0
        return self.kv_save_base_ms + self.kv_save_ms_per_token * tokens

    def kv_load_ms(self, tokens: float) -> float:
        """Extra step time of admitting a request with ``tokens`` of remote KV (decode side)."""
        if tokens <= 0:
            return 0.0
        return self.kv_load_base_ms + self.kv_load_ms_per_token * tokens

    @property
    def num_blocks(self) -> int:
        return self.kv_capacity_tokens // self.block_size

    @property
    def base_step_ms(self) -> float:
        """Fixed per-step cost (smallest measured step): shared once when a step mixes
        prefill chunks and decodes, so it is not paid twice."""
        return min(self.prefill_latency_ms[0], self.decode_ms(1, 1))

    def prefill_ms(self, tokens: float, prefix_tokens: float = 0.0) -> float:
        """Time to prefill ``tokens`` new tokens after ``prefix_tokens`` already in KV."""
        base = _interp_power_above(self.prefill_tokens, self.prefill_latency_ms, tokens)
        if prefix_tokens <= 0 or not self.prefix_grid:
            return base
        return base + self._prefix_extra_ms(tokens, prefix_tokens)

    def _prefix_extra_ms(self, tokens: float, prefix_tokens: float) -> float:
        """Extra attention cost of a cached prefix, from ``prefill_with_prefix`` rows:
        interpolated along prefix length between measured prefixes (0 at prefix 0)."""
        prefixes = sorted(self.prefix_grid)
        extras: list[float] = []
        for p in prefixes:
            toks, lat = self.prefix_grid[p]
            with_prefix = (
                _interp_linear(toks, lat, tokens)
                if tokens > toks[0]
                else lat[0] * (tokens / toks[0])
            )
            no_prefix = _interp_power_above(self.prefill_tokens, self.prefill_latency_ms, tokens)
            extras.append(max(with_prefix - no_prefix, 0.0))
        return _interp_linear([0.0, *prefixes], [0.0, *extras], prefix_tokens)

    def decode_row(self, context_tokens: float) -> list[float]:
        """Unscaled decode step time of every ``decode_batches`` entry at one context
        (memoised); ``decode_ms`` is ``decode_scale`` x this row interpolated along batch."""
        row = self._rows.get(context_tokens)
        if row is None:
            if len(self._rows) >= _ROWS_KEPT:
                self._rows.clear()
            row = self._rows[context_tokens] = [
                _interp_linear(cs, lat, context_tokens)
                for cs, lat in zip(self.decode_contexts, self.decode_latency_ms, strict=True)
            ]
        return row

    def decode_ms_many(
        self, batches: npt.NDArray[Any], context_tokens: float
    ) -> npt.NDArray[np.float64]:
        """``decode_ms`` for many batch sizes at one context (vectorised routing)."""
        x = batches.astype("float64")
        row = self.decode_row(context_tokens)
        out: npt.NDArray[np.float64] = self.decode_scale * _interp_linear_many(
            self.decode_batches, row, x
        )
        return out

    def decode_ms(self, batch_size: float, context_tokens: float) -> float:
        """One decode step for ``batch_size`` sequences at mean context ``context_tokens``."""
        bs = self.decode_batches
        if len(bs) == 1 or batch_size <= bs[0]:
            return self.decode_scale * _interp_linear(
                self.decode_contexts[0], self.decode_latency_ms[0], context_tokens
            )
        i = bisect_right(bs, batch_size)
        if i >= len(bs):
            i = len(bs) - 1
        b0, b1 = bs[i - 1], bs[i]
        y0 = _interp_linear(
            self.decode_contexts[i - 1], self.decode_latency_ms[i - 1], context_tokens
        )
        y1 = _interp_linear(self.decode_contexts[i], self.decode_latency_ms[i], context_tokens)
        return self.decode_scale * max(y0 + (y1 - y0) * (batch_size - b0) / (b1 - b0), 0.0)


def _running_max(ys: list[float]) -> list[float]:
    out: list[float] = []
    for y in ys:
        out.append(max(y, out[-1]) if out else y)
    return out


def _monotone_decode(contexts: list[list[float]], lat: list[list[float]]) -> list[list[float]]:
    """Step time never falls with more work, but a noisy measurement can make a bigger
    batch or a longer context look faster, and extrapolating such a dip gives steps of
    zero or less. Take the running maximum along context, then along batch size."""
    rows = [_running_max(r) for r in lat]
    for i in range(1, len(rows)):
        prev_cs, prev = contexts[i - 1], rows[i - 1]
        rows[i] = [
            max(y, _interp_linear(prev_cs, prev, c))
            for c, y in zip(contexts[i], rows[i], strict=True)
        ]
    return rows


class _Grids(TypedDict):
    prefill_tokens: list[float]
    prefill_latency_ms: list[float]
    decode_batches: list[float]
    decode_contexts: list[list[float]]
    decode_latency_ms: list[list[float]]


def _grids(
    prefill: dict[float, float], decode: dict[float, dict[float, float]], name: str
) -> _Grids:
    """Sorted, monotone interpolation grids from measured points (keyed by x)."""
    if not prefill or not decode:
        raise ValueError(f"profile {name}: needs both prefill and decode rows")
    batches = sorted(decode)
    contexts = [sorted(decode[b]) for b in batches]
    latencies = _monotone_decode(
        contexts, [[decode[b][c] for c in cs] for b, cs in zip(batches, contexts, strict=True)]
    )
    return _Grids(
        prefill_tokens=sorted(prefill),
        prefill_latency_ms=_running_max([prefill[k] for k in sorted(prefill)]),
        decode_batches=batches,
        decode_contexts=contexts,
        decode_latency_ms=latencies,
    )


def fit_linear(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Robust ``y = a + b x`` with ``a, b >= 0``: Theil-Sen (slope = median of the
    pairwise slopes, intercept = median of ``y - b x``), so one point measured while
    the host stalled does not tilt the line. A negative slope keeps the median as a
    constant; a negative intercept refits through the origin (median of ``y / x``).
    Fewer than two distinct ``x``: the median of ``y`` as a constant."""
    if not points:
        return 0.0, 0.0
    pts = [(float(x), float(y)) for x, y in points]
    slopes = [
        (y1 - y0) / (x1 - x0)
        for i, (x0, y0) in enumerate(pts)
        for x1, y1 in pts[i + 1 :]
        if x1 != x0
    ]
    if not slopes:
        return max(statistics.median(y for _, y in pts), 0.0), 0.0
    b = statistics.median(slopes)
    if b <= 0:
        return max(statistics.median(y for _, y in pts), 0.0), 0.0
    a = statistics.median(y - b * x for x, y in pts)
    if a < 0:
        return 0.0, max(statistics.median(y / x for x, y in pts if x > 0), 0.0)
    return a, b


_INT_KEYS = (
    "kv_capacity_tokens",
    "block_size",
    "max_num_batched_tokens",
    "max_num_seqs",
    "max_model_len",
)


def _parse_header(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in line.lstrip("#").split()[1:]:
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def parse_profile(text: str, name: str = "custom") -> Profile:
    """Parse either CSV dialect (see module doc); raises ValueError on unusable data."""
    meta: dict[str, str] = {}
    lines = text.splitlines()
    body = []
    for line in lines:
        if line.startswith("# slaplane-profile"):
            meta = _parse_header(line)
        elif line.strip() and not line.startswith("#"):
            body.append(line)
    prefill: dict[float, float] = {}
    prefix_rows: dict[float, dict[float, float]] = {}
    decode: dict[float, dict[float, float]] = {}
    pd_rows: dict[str, list[tuple[float, float]]] = {"kv_save": [], "kv_load": []}
    for row in csv.DictReader(body):
        kind = row.get("kind") or row.get("phase") or ""
        batch = float(row["batch_size"])
        x = float(row.get("tokens_or_context") or row.get("context_tokens_or_prompt_tokens") or 0)
        prefix = float(row.get("prefix_cached") or 0)
        lat = float(row["latency_ms"])
        if kind == "prefill" and prefix == 0:
            prefill[x] = lat
        elif kind in ("prefill", "prefill_with_prefix"):
            prefix_rows.setdefault(prefix, {})[x] = lat
        elif kind in ("decode", "decode_step"):
            decode.setdefault(batch, {})[x] = lat
        elif kind in pd_rows:
            pd_rows[kind].append((x, lat))
        else:
            raise ValueError(f"profile {name}: unknown row kind {kind!r}")
    grids = _grids(prefill, decode, name)
    kwargs = {k: int(meta[k]) for k in _INT_KEYS if k in meta}
    terms: dict[str, float] = {}
    for kind, pts in pd_rows.items():
        a, b = fit_linear(pts)
        terms[f"{kind}_base_ms"], terms[f"{kind}_ms_per_token"] = a, b
    terms["decode_scale"] = 1.0
    for k in terms:
        if k in meta:
            terms[k] = float(meta[k])
            if not terms[k] >= 0 or (k == "decode_scale" and not terms[k] > 0):
                raise ValueError(f"profile {name}: bad {k}={meta[k]!r}")
    return Profile(
        name=meta.get("name", name),
        model=meta.get("model", name),
        **grids,
        prefix_grid={
            p: (sorted(rows), [rows[t] for t in sorted(rows)]) for p, rows in prefix_rows.items()
        },
        kv_save_base_ms=terms["kv_save_base_ms"],
        kv_save_ms_per_token=terms["kv_save_ms_per_token"],
        kv_load_base_ms=terms["kv_load_base_ms"],
        kv_load_ms_per_token=terms["kv_load_ms_per_token"],
        decode_scale=terms["decode_scale"],
        **kwargs,
    )


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``controlplane/profiles``."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.csv"))


def profile_path(name_or_path: str | Path) -> Path:
    """The CSV of a shipped profile name (``cpu-tiny``, ``h100-llama3.1-8b``) or a path;
    raises ValueError naming the shipped profiles when neither exists."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PROFILES_DIR / f"{name_or_path}.csv"
    if not path.is_file():
        raise ValueError(
            f"unknown profile {name_or_path!r}; shipped: {', '.join(available_profiles())}"
        )
    return path


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (``cpu-tiny``, ``h100-llama3.1-8b``) or a CSV path."""
    path = profile_path(name_or_path)
    return parse_profile(path.read_text(), name=path.stem)


CPU_TINY_FIXTURE = Profile.from_points(
    # = cpu-tiny-fixture.csv (shared/fixtures/vllm-0.32.0/profile.csv), held in code so the
    # policy's default needs no file read; a test keeps the two equal
    prefill=[(64, 12.72), (256, 23.87), (1024, 92.64), (2048, 226.36)],
    decode=[
        (1, 128, 2.45), (2, 128, 2.7), (4, 128, 3.72), (8, 128, 5.16),
        (1, 1024, 3.5), (2, 1024, 4.95), (4, 1024, 7.36), (8, 1024, 11.32),
    ],
    name="cpu-tiny-fixture", model="tiny-llama", kv_capacity_tokens=131_072, block_size=128,
    max_num_batched_tokens=2048, max_num_seqs=128, max_model_len=4096,
)  # fmt: skip
"""The predictor's default profile until a driver passes one (``--profile``)."""
