"""``make demo-engines`` (benchmarks/bench_engines.py): each engine agrees with its reference."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_engines


def test_engines_agree_with_their_references(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_engines.deformable_attention(repeats=1) < 1e-5
    ours, scipy_total = bench_engines.hungarian_matching(repeats=1)
    assert scipy_total is not None and ours == pytest.approx(scipy_total, rel=1e-12)
    out = capsys.readouterr().out
    assert "max |kernel - reference|" in out and "scipy loop: total cost" in out
