"""benchmarks/harness.py: where runs write (smoke runs never over committed results), tables."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import harness


def test_results_path() -> None:
    committed = harness.RESULTS / "matcher_cpu.json"
    assert harness.results_path(None, "matcher_cpu", scratch=False) == committed
    quick = harness.results_path(None, "matcher_cpu", scratch=True)
    assert quick.parent == harness.SCRATCH and quick != committed
    assert (
        harness.results_path("mine", "matcher_cpu", scratch=True) == harness.RESULTS / "mine.json"
    )
    assert harness.results_path("/x/y.json", "m", scratch=False) == Path("/x/y.json")


def test_format_table_by_hand() -> None:
    rows = [{"n": 100, "s": 0.000123456}, {"n": 2000, "s": None}]
    assert harness.format_table(rows, ["n", "s"]).splitlines() == [
        "   n         s",
        "----  --------",
        " 100  0.000123",
        "2000         -",
    ]


def test_write_json_adds_the_environment(tmp_path: Path) -> None:
    import json

    path = harness.write_json(tmp_path / "a" / "r.json", {"x": 1})
    data = json.loads(path.read_text())
    assert data["x"] == 1 and "python" in data["environment"]
