"""benchmarks/bench_msda.py --device cuda --dry-run: the GPU script rehearsed on CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_dry_run():
    """Every msda_ops backend (Triton interpreted) through fwd/bwd/fwd+bwd, softmax off and
    on, on the tiniest shape; the anchors report why they are skipped."""
    pytest.importorskip("triton")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_msda.py"),
            "--device",
            "cuda",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    timed = {
        (line.split()[2], line.split()[3], line.split()[4])
        for line in lines
        if line.startswith("tiny")
    }
    expected = {
        (mode, f"sm={sm}", impl)
        for mode in ("fwd", "bwd", "fwd+bwd")
        for sm in (0, 1)
        for impl in ("kernel", "triton", "reference")
    }
    assert expected <= timed, proc.stdout
    for anchor in ("sensetime", "deformops-cuda", "deformops-triton"):
        assert any(line.startswith(f"anchor {anchor}: skipped (") for line in lines), proc.stdout


def test_speedup_plot_draws_one_bar_group_per_case(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_msda
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
