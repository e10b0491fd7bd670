"""benchmarks/bench_convergence.py: the claim's bookkeeping, and every variant at one size."""

from __future__ import annotations

import argparse
import json
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


def _curve(steps: list[int], ap: list[float], aps: list[float] | None = None) -> dict:
    aps = aps if aps is not None else ap
    return {"steps": steps, "AP": ap, "AP50": ap, "AP75": ap, "APs": aps, "APm": ap, "APl": ap}


def test_summary_answers_each_claim() -> None:
    results = {
        "detr": _curve([100, 200, 300, 400], [0.0, 0.1, 0.2, 0.3], [0.0, 0.0, 0.05, 0.1]),
        "ddetr-single-scale": _curve([40, 80], [0.2, 0.32], [0.0, 0.02]),
        "ddetr": _curve([40, 80], [0.35, 0.4], [0.2, 0.25]),
        "ddetr-refine": _curve([40, 80], [0.1, 0.29], [0.3, 0.3]),
        "ddetr-two-stage": _curve([40, 80], [0.3, 0.5], [0.1, 0.2]),
    }
    summary = bc.summarize(results)
    reach = summary["epochs_to_detr_final_AP"]
    assert reach["baseline_final_AP"] == 0.3
    # ddetr is there at its first evaluation: 40 of DETR's 400 steps.
    assert reach["ddetr"]["steps"] == 40
    assert reach["ddetr"]["fraction_of_detr_steps"] == pytest.approx(0.1)
    assert reach["ddetr"]["within_a_fifth"]
    assert reach["ddetr-single-scale"]["fraction_of_detr_steps"] == pytest.approx(0.2)
    assert reach["ddetr-refine"]["steps"] is None and not reach["ddetr-refine"]["within_a_fifth"]
    assert reach["detr"]["fraction_of_detr_steps"] == pytest.approx(1.0)
    small = summary["small_objects"]
    assert small["final_APs"] == {"detr": 0.1, "ddetr": 0.25}
    # At ddetr's last step (80) DETR had not been evaluated yet.
    assert small["at_step"] == 80 and small["APs_at_step"]["detr"] is None
    assert small["agrees_with_paper"]
    assert summary["multi_scale"]["AP"]["difference"] == pytest.approx(0.4 - 0.32)
    assert summary["multi_scale"]["APs"]["agrees_with_paper"]
    assert summary["refinement"]["AP"]["difference"] == pytest.approx(0.29 - 0.4)
    assert not summary["refinement"]["AP"]["agrees_with_paper"]
    assert summary["refinement"]["APs"]["agrees_with_paper"]
    assert summary["two_stage"]["AP"]["ddetr-refine"] == 0.29
    assert summary["final"]["ddetr"]["APs"] == 0.25
    # Without DETR there is nothing to reach, and the ablations still compare.
    partial = bc.summarize({k: v for k, v in results.items() if k != "detr"})
    assert "epochs_to_detr_final_AP" not in partial and "multi_scale" in partial


def test_value_at() -> None:
    assert bc.value_at([100, 200], [0.1, 0.2], 150) == 0.1
    assert bc.value_at([100, 200], [0.1, 0.2], 200) == 0.2
    assert bc.value_at([100, 200], [0.1, 0.2], 50) is None


def test_quick_run_writes_results_and_plots(tmp_path: Path) -> None:
    """The miniature protocol end to end, two variants (one DETR) in two processes."""
    out = tmp_path / "conv.json"
    bc.main(["--quick", "--no-progress", "--variants", "detr-r50", "ddetr", "--output", str(out)])
    data = json.loads(out.read_text())
    assert not data["partial"] and set(data["results"]) == {"detr", "ddetr"}
    detr, ddetr = data["results"]["detr"], data["results"]["ddetr"]
    # DETR's own budget (4 quick epochs) against 2, evaluated after every epoch.
    assert detr["epochs"] == [1, 2, 3, 4] and ddetr["epochs"] == [1, 2]
    assert all(len(ddetr[m]) == 2 for m in bc.METRICS)
    assert data["protocol"]["area_thresholds"]["small_below"] == pytest.approx(
        64**2 / 640**2 * 1024
    )
    assert sum(data["dataset"]["val"]["buckets"].values()) == data["dataset"]["val"]["objects"]
    for suffix in ("", "_small", "_ablation"):
        assert out.with_name(f"conv{suffix}.png").stat().st_size > 0


def test_bad_arguments_exit_2() -> None:
    for argv in (["--variants", "detr"], ["--jobs", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            bc.parse_args(argv)
        assert exit_info.value.code == 2


def test_every_variant_builds_at_the_benchmark_size() -> None:
    args = argparse.Namespace(width=8, hidden=32, enc_layers=1, dec_layers=1, queries=10, size=64)
    sizes = {}
    for name in bc.VARIANTS:
        model = zoo.create_model(name, **bc.model_overrides(args, name))
        config = model.config
        assert config.backbone.norm == "group" and config.image_size == 64
        sizes[name] = (config.hidden_dim, config.enc_layers, config.dec_layers, config.num_queries)
    assert len(set(sizes.values())) == 1  # equal sizes: the comparison is fair
