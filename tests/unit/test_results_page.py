"""The results page is generated from the benchmarks' JSON and never disagrees with it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import make_results  # noqa: E402
from benchmarks.results_io import Headline, Result, Table, write_result  # noqa: E402


def test_committed_page_is_what_the_data_says() -> None:
    docs = make_results.load()
    assert len(docs) >= 10, "every benchmark section records its figures"
    text = make_results.render(docs)
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == text, "run `make results`"
    assert text.count("\n") <= make_results.MAX_LINES
    for d in docs:  # every section says how it was made and answers its question
        assert d["command"].startswith(".venv/bin/python benchmarks/"), d["section"]
        assert d["headline"], d["section"]


def test_round_trip_and_caps(tmp_path: Path) -> None:
    import pytest

    mp = pytest.MonkeyPatch()
    mp.setenv("SLAPLANE_RESULTS_DIR", str(tmp_path))
    try:
        rows = [[i, i * 2.5] for i in range(10)]
        write_result(
            Result(
                "demo", "Demo section", "Is it so?",
                headline=[Headline("Is it so?", "x", "1", "2", "> 0", True, "here")],
                tables=[Table("", ["a", "b"], rows), Table("", ["c"], [[1]])],
                notes=["n1", "n2", "n3"],
            ),
            command=".venv/bin/python benchmarks/demo.py --record",
        )  # fmt: skip
    finally:
        mp.undo()
    doc = json.loads((tmp_path / "demo.json").read_text())
    assert doc["command"].endswith("--record") and doc["measured_at"]
    text = make_results.render(make_results.load(tmp_path))
    assert "| Is it so? | x | 1 | 2 | > 0 | **yes** | here |" in text
    assert "| 3 | 7.5 |" in text and "| 4 | 10 |" not in text  # capped at 4 rows
    assert "- n2" in text and "- n3" not in text
    assert "6 more rows, 1 more tables, 1 more notes in `benchmarks/results/demo.json`" in text
