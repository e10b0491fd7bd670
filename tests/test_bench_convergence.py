"""benchmarks/bench_convergence.py: the claim's bookkeeping, and every variant at one size."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_convergence as bc

import zoo


def test_steps_to_reach() -> None:
    steps, ap = [100, 200, 300], [0.1, 0.25, 0.2]
    assert bc.steps_to_reach(steps, ap, 0.25) == 200
    assert bc.steps_to_reach(steps, ap, 0.05) == 100
    assert bc.steps_to_reach(steps, ap, 0.3) is None


def test_summary_against_the_baselines_final_ap() -> None:
    results = {
        "detr": {
            "steps": [100, 200, 300, 400],
            "AP": [0.0, 0.1, 0.2, 0.3],
            "AP50": [0, 0, 0, 0.5],
        },
        "ddetr": {
            "steps": [100, 200, 300, 400],
            "AP": [0.35, 0.4, 0.5, 0.6],
            "AP50": [0, 0, 0, 0.9],
        },
        "ddetr-refine": {
            "steps": [100, 200, 300, 400],
            "AP": [0.1, 0.2, 0.29, 0.31],
            "AP50": [0] * 4,
        },
    }
    summary = bc.summarize(results)
    assert summary["baseline_final_AP"] == 0.3
    # ddetr is there at its first evaluation: 100 of DETR's 400 steps.
    assert summary["ddetr"]["steps_to_baseline_final_AP"] == 100
    assert summary["ddetr"]["fraction_of_baseline_steps"] == pytest.approx(0.25)
    assert summary["ddetr-refine"]["fraction_of_baseline_steps"] == pytest.approx(1.0)
    assert summary["detr"]["fraction_of_baseline_steps"] == pytest.approx(1.0)
    assert summary["ddetr"]["final_AP50"] == 0.9
    assert bc.summarize({"ddetr": results["ddetr"]}) == {}


def test_every_variant_builds_at_the_benchmark_size() -> None:
    args = argparse.Namespace(width=8, hidden=32, enc_layers=1, dec_layers=1, queries=10, size=64)
    sizes = {}
    for name in bc.VARIANTS:
        model = zoo.create_model(name, **bc.model_overrides(args, name))
        config = model.config
        assert config.backbone.norm == "group" and config.image_size == 64
        sizes[name] = (config.hidden_dim, config.enc_layers, config.dec_layers, config.num_queries)
    assert len(set(sizes.values())) == 1  # equal sizes: the comparison is fair
