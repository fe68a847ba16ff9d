"""What to measure, and the checkpoint that makes a sweep resumable.

A point is (``prefill``, 1, prompt tokens) → median TTFT, or (``decode``, batch,
context tokens) → median steady inter-token gap with ``batch`` concurrent streams
at that context. Every finished point is appended to a JSONL checkpoint at once,
so an interrupted sweep restarts where it stopped and a finished one is free.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Point:
    phase: str  # prefill | decode
    batch: int
    tokens: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.phase, self.batch, self.tokens)


@dataclass(frozen=True, slots=True)
class Result:
    phase: str
    batch: int
    tokens: int
    latency_ms: float
    samples: int


def make_plan(
    prompt_lengths: list[int], batches: list[int], contexts: list[int], max_model_len: int
) -> list[Point]:
    pts = [Point("prefill", 1, n) for n in sorted(set(prompt_lengths)) if n < max_model_len]
    pts += [
        Point("decode", b, c)
        for c in sorted(set(contexts))
        for b in sorted(set(batches))
        if c < max_model_len
    ]
    return pts


class Checkpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.results: dict[tuple[str, int, int], Result] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    r = Result(**json.loads(line))
                    self.results[(r.phase, r.batch, r.tokens)] = r

    def done(self, p: Point) -> bool:
        return p.key in self.results

    def add(self, r: Result) -> None:
        self.results[(r.phase, r.batch, r.tokens)] = r
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(asdict(r)) + "\n")
