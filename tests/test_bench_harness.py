"""benchmarks/harness.py: where runs write (smoke runs never over committed results), tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


def test_time_fn_reports_the_wall_median_without_events() -> None:
    import time

    calls = []

    def fn() -> None:
        calls.append(1)
        time.sleep(0.02)

    t = harness.time_fn(fn, repeats=5, warmup=2)
    assert len(calls) == 7 and t["repeats"] == 5
    assert t["event_median_s"] is None and t["median_s"] == t["wall_median_s"]
    assert 0.02 <= t["min_s"] <= t["median_s"] <= t["max_s"] < 0.5


@pytest.mark.gpu
def test_time_fn_times_cuda_work_with_events() -> None:
    import torch

    a = torch.randn(4096, 4096, device="cuda")
    t = harness.time_fn(lambda: a @ a, repeats=5, device="cuda", flush_l2=True)
    assert t["event_median_s"] == t["median_s"] and 0 < t["median_s"] <= t["wall_median_s"]
