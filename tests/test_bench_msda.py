"""benchmarks/bench_msda.py: our backends checked against the reference, anchors that cannot run
skipped (never failing the run), speedups computed from the recorded medians."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_msda

from msda_ops import ms_deform_attn_reference

ROOT = Path(__file__).resolve().parents[1]

ANCHORS = ("sensetime", "deformops-cuda", "deformops-triton")


def _reference(v, s, st, loc, w, softmax):
    return ms_deform_attn_reference(v, s, st, loc, w, softmax=softmax)


def _kernel(v, s, st, loc, w, softmax):
    return bench_msda._ours("kernel")(v, s, st, loc, w, softmax)


def _check_speedups(payload: dict) -> None:
    """Each speedup is the recorded median of the anchor over that of our fastest backend."""
    medians = {(r["case"], r["dtype"], r["mode"], r["softmax"], r["impl"]): r["median_s"]
               for r in payload["results"]}  # fmt: skip
    assert payload["speedups"]
    for s in payload["speedups"]:
        key = (s["case"], s["dtype"], s["mode"], s["softmax"])
        ours = {i: medians[(*key, i)] for i in ("kernel", "triton") if (*key, i) in medians}
        assert s["ours"] == min(ours, key=ours.__getitem__)
        assert s["speedup"] == pytest.approx(medians[(*key, s["versus"])] / ours[s["ours"]])


def test_gpu_benchmark_dry_run_checks_every_backend(tmp_path: Path) -> None:
    """The GPU plan rehearsed on CPU (Triton interpreted): every backend ran and matched the
    float64 reference; the anchors, not run in a dry run, are skipped cells; exit 0."""
    pytest.importorskip("triton")
    out = tmp_path / "msda.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_msda.py"), "--device", "cuda",
         "--dry-run", "--output", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    payload = json.loads(out.read_text())
    cells = {(c["impl"], c["softmax"]): c for c in payload["cells"]}
    for impl in ("kernel", "triton", "reference"):
        for softmax in (False, True):
            cell = cells[(impl, softmax)]
            assert cell["status"] == "ran" and cell["matched"], cell
            assert cell["max_scaled_error"] <= 1e-4
    for anchor in ANCHORS:
        assert cells[(anchor, False)]["status"].startswith("skipped: "), cells[(anchor, False)]
    assert payload["failures"] == []
    timed = {(r["mode"], r["softmax"], r["impl"]) for r in payload["results"]}
    assert timed == {(m, sm, i) for m in bench_msda.MODES for sm in (False, True)
                     for i in ("kernel", "triton", "reference")}  # fmt: skip
    _check_speedups(payload)


def _args() -> argparse.Namespace:
    return argparse.Namespace(dry_run=True, quick=False, impls=None, repeats=1, rounds=1,
                              budget=0.01, flush_l2=False)  # fmt: skip


def test_an_anchor_that_cannot_run_is_skipped_and_the_run_passes(monkeypatch) -> None:
    def half_only(v, s, st, loc, w, softmax):
        raise RuntimeError("not implemented for 'Float'")  # as the original op on other dtypes

    def wrong(v, s, st, loc, w, softmax):
        return _reference(v, s, st, loc, w, softmax) * 1.5

    impls = {"kernel": _kernel, "reference": _reference, "sensetime": half_only, "odd": wrong}
    monkeypatch.setattr(bench_msda, "implementations", lambda device, dry: (impls, {}))
    payload = bench_msda.run("cuda", _args())
    status = {(c["impl"], c["softmax"]): c["status"] for c in payload["cells"]}
    assert status[("sensetime", False)] == "skipped: RuntimeError(\"not implemented for 'Float'\")"
    # An anchor with other numbers is timed and reported, not a failure of ours.
    odd = [c for c in payload["cells"] if c["impl"] == "odd"]
    assert odd and all(c["status"] == "ran" and not c["matched"] for c in odd)
    assert payload["failures"] == []
    assert "sensetime" not in {r["impl"] for r in payload["results"]}
    _check_speedups(payload)


def test_our_kernel_off_the_reference_fails_the_run(monkeypatch) -> None:
    def broken(v, s, st, loc, w, softmax):
        return _kernel(v, s, st, loc, w, softmax) * 1.01

    impls = {"kernel": broken, "reference": _reference}
    monkeypatch.setattr(bench_msda, "implementations", lambda device, dry: (impls, {}))
    payload = bench_msda.run("cuda", _args())
    assert {c["status"] for c in payload["failures"]} == {"failed: does not match the reference"}
    assert {c["impl"] for c in payload["failures"]} == {"kernel"}
    assert bench_msda.main(["--device", "cuda", "--dry-run"]) == 1


def test_our_backend_that_raises_fails_where_an_anchor_would_be_skipped(monkeypatch) -> None:
    def raises(*args):
        raise RuntimeError("no kernel image")

    impls = {"triton": raises, "deformops-cuda": raises, "reference": _reference}
    monkeypatch.setattr(bench_msda, "implementations", lambda device, dry: (impls, {}))
    payload = bench_msda.run("cuda", _args())
    status = {c["impl"]: c["status"] for c in payload["cells"] if not c["softmax"]}
    assert status["triton"].startswith("failed: ") and status["deformops-cuda"].startswith(
        "skipped: "
    )
    assert [c["impl"] for c in payload["failures"]] == ["triton", "triton"]


def test_speedup_plot_draws_one_bar_group_per_case(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    row = {"case": "encoder-n1", "dtype": "float32", "mode": "fwd", "softmax": False}
    rows = [
        {**row, "ours": "kernel", "versus": "reference", "speedup": 12.0},
        {**row, "mode": "bwd", "ours": "kernel", "versus": "sensetime", "speedup": 0.5},
    ]
    png = tmp_path / "msda.png"
    assert bench_msda.plot_speedups(rows, png)
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) > 100
    assert not bench_msda.plot_speedups([], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_roofline_rates_each_round_against_the_peak_of_that_round() -> None:
    """roofline_cpu.paired: hand-computed ratios, the memory side where it binds."""
    import roofline_cpu

    n = 10  # a matmul of 2 * 10^3 = 2000 FLOPs
    # Round 1: peak 2000 FLOP / 1 s -> compute bound 500 / 2000 = 0.25 s; memory 100 / 1000
    # = 0.1 s: bound 0.25 s, kernel 0.5 s -> 2x. Round 2: peak 4000 FLOP/s -> 0.125 s; kernel
    # 0.5 s -> 4x. Round 3: peak 20000 FLOP/s -> 0.025 s, below the memory's 0.1 s -> 5x.
    got = roofline_cpu.paired([0.5, 0.5, 0.5], [1.0, 0.5, 0.1], n, 500, 100, 1000.0)
    assert got["x_bound_rounds"] == pytest.approx([2.0, 4.0, 5.0])
    assert (got["x_bound_median"], got["x_bound_min"], got["x_bound_max"]) == pytest.approx(
        (4.0, 2.0, 5.0)
    )
    with pytest.raises(ValueError):
        roofline_cpu.paired([0.5], [1.0, 0.5], n, 500, 100, 1000.0)
