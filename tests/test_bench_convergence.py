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


def _run(seed: int, detr_ap: float, ms_ap: float) -> dict:
    curves = {
        "detr": _curve([100, 500], [0.0, detr_ap], [0.0, 0.01]),
        "ddetr-single-scale": _curve([50, 100], [0.1, 0.2], [0.0, 0.02]),
        "ddetr": _curve([50, 100], [0.2, ms_ap], [0.05, 0.1]),
    }
    for res in curves.values():
        res["epochs"] = list(range(1, len(res["steps"]) + 1))
    return {
        "settings": {"seed": seed},
        "paper": bc.PAPER,
        "results": curves,
        "summary": bc.summarize(curves),
        "wall_seconds": 600.0,
        "protocol": {"concurrency": "2 variants at once"},
        "environment": {"cpu_count": 2, "processor": "x86_64", "torch": "2.x"},
    }


def test_report_tables_mean_spread_and_agreement() -> None:
    import report_convergence as rc

    text = rc.report([_run(0, 0.15, 0.3), _run(1, 0.25, 0.5)])
    lines = text.splitlines()

    def row(label: str, table: int = 0) -> str:
        """The ``table``-th row (in order of the tables) whose first cell is ``label``."""
        return [x for x in lines if x.startswith(f"| {label} |")][table]

    # Final metrics: mean and half the spread of the two seeds' final AP.
    assert row("Deformable DETR, multi-scale").startswith(
        "| Deformable DETR, multi-scale | 2 | 0.400 ± 0.100 |"
    )
    assert row("DETR").startswith("| DETR | 2 | 0.200 ± 0.050 |")
    # ddetr reaches DETR's final AP at 50 of 500 steps (seed 0) and 100 of 500 (seed 1).
    assert row("Deformable DETR, multi-scale", 1) == (
        "| Deformable DETR, multi-scale | 0.10 | 0.20 | 0.15 | 0.10 | yes, yes |"
    )
    # multi-scale minus single-scale AP: 0.1 and 0.3; the paper's +5.1 (44.5 - 39.4).
    assert row("multi-scale against single-scale, AP") == (
        "| multi-scale against single-scale, AP | 0.100 | 0.300 | 0.200 | 0.200 | +5.1 | yes |"
    )
    # APs: 0.08 in both seeds against the paper's +6.5.
    assert "| +6.5 | yes |" in row("multi-scale against single-scale, APs")
    # Seeds on both sides of zero are flagged: -0.05 and +0.3.
    mixed = rc.report([_run(0, 0.15, 0.15), _run(1, 0.25, 0.5)]).splitlines()
    line = next(x for x in mixed if x.startswith("| multi-scale against single-scale, AP |"))
    assert line.endswith("| +5.1 | yes (the seeds disagree) |")
    # No refinement run: its rows are there, empty, and nothing fails.
    assert row("box refinement against none, AP").startswith(
        "| box refinement against none, AP | — | — | — | — |"
    )
