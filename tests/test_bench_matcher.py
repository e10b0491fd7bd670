"""benchmarks/matcher_square.py: the square LSAP benchmark's matrices, checks and summary."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import matcher_square


@pytest.mark.parametrize("kind", matcher_square.KINDS)
def test_kinds_are_what_they_say(kind):
    cost = matcher_square.make_cost(kind, 50, np.random.default_rng(0))
    assert cost.shape == (50, 50) and cost.dtype == np.float64 and np.isfinite(cost).all()
    if kind in ("integer", "ties"):
        assert (cost == np.round(cost)).all()
        assert len(np.unique(cost)) <= (8 if kind == "ties" else 50)
    if kind == "lowrank":
        assert np.linalg.matrix_rank(cost) == 3


def test_rows_record_every_contender_and_the_target():
    rows = matcher_square.bench([30], None, None, kinds=("uniform", "ties"))
    assert [(r["kind"], r["dtype"]) for r in rows] == [
        ("uniform", "float64"),
        ("uniform", "float32"),
        ("ties", "float64"),
        ("ties", "float32"),
    ]
    for r in rows:
        assert r["speedup_vs_scipy"] == pytest.approx(r["scipy_s"] / r["matcher_rs_s"])
        assert r["meets_target"] == (r["speedup_vs_scipy"] >= matcher_square.TARGET)
    summary = matcher_square.summary(rows)
    assert len(summary["met"]) + len(summary["missed"]) == 4


def test_a_wrong_answer_stops_the_benchmark(monkeypatch):
    # Timing a contender that is not optimal would compare wrong answers.
    identity = lambda c: (np.arange(len(c)), np.arange(len(c)))  # noqa: E731
    monkeypatch.setattr(matcher_square.matcher_rs, "linear_sum_assignment", identity)
    with pytest.raises(AssertionError, match="uniform"):
        matcher_square.bench([30], None, None, kinds=("uniform",))
