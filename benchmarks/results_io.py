"""The one format benchmark figures are kept in: ``benchmarks/results/<section>.json``.

Every benchmark script ends with ``write_result(...)``; ``make results``
(``benchmarks/make_results.py``) renders ``benchmarks/RESULTS.md`` from these files
alone, so the page can never disagree with the data. The command, commit and time are
recorded automatically; numbers are never typed into the page by hand.

Schema (one JSON object per section)::

    {"section": "replay_goodput", "title": "...", "question": "...",
     "command": ".venv/bin/python benchmarks/bench_replay.py ...",
     "commit": "abc1234", "dirty": false, "measured_at": "2026-12-07T23:50:00Z",
     "host": "2 cores, Linux ...", "order": 20,
     "headline": [{"question": ..., "metric": ..., "slaplane": ..., "baseline": ...,
                   "goal": ..., "met": true | false | null, "conditions": ...}],
     "tables": [{"title": ..., "columns": [...], "rows": [[...], ...], "note": ...}],
     "notes": ["one or two short lines each"]}
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"


@dataclass
class Headline:
    question: str
    metric: str
    slaplane: str
    baseline: str
    goal: str
    met: bool | None
    """None: no goal was set, the row only reports."""
    conditions: str


@dataclass
class Table:
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    note: str = ""


@dataclass
class Result:
    section: str
    title: str
    question: str
    headline: list[Headline] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    order: int = 100
    """Where the section goes on the page (lower first)."""


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def command_line() -> str:
    """The command that is running, as a reader would retype it from the repo root."""
    prog = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        prog = prog.resolve().relative_to(ROOT)
    return " ".join([".venv/bin/python", shlex.quote(str(prog)), *map(shlex.quote, sys.argv[1:])])


def write_result(result: Result, command: str | None = None) -> Path:
    """Write ``benchmarks/results/<section>.json`` (``SLAPLANE_RESULTS_DIR`` overrides
    the folder, for tests)."""
    out_dir = Path(os.environ.get("SLAPLANE_RESULTS_DIR", RESULTS_DIR))
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = asdict(result)
    doc.update(
        command=command or command_line(),
        commit=_git("rev-parse", "--short", "HEAD"),
        dirty=bool(_git("status", "--porcelain", "--untracked-files=no")),
        measured_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        host=f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}",
    )
    path = out_dir / f"{result.section}.json"
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return path


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for a table cell (``-`` for missing)."""
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:,.0f}"
