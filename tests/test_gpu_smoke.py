"""benchmarks/gpu_smoke.py: the GPU day's first fact, every backend against the reference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_smoke

from msda_ops import ms_deform_attn


def test_the_cpu_kernel_and_the_reference_pass(monkeypatch, tmp_path: Path) -> None:
    # Triton runs only in its interpreter here (minutes): the dry run of the GPU day covers it.
    monkeypatch.setattr(gpu_smoke, "BACKENDS", ("kernel", "reference"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        gpu_smoke, "smoke", lambda device, dtypes, real=gpu_smoke.smoke: real("cpu", dtypes)
    )
    assert gpu_smoke.main(["--out", str(tmp_path)]) == 0
    cells = json.loads((tmp_path / "smoke.json").read_text())["cells"]
    assert {(c["backend"], c["dtype"], c["softmax"]) for c in cells} == {
        (b, d, sm)
        for b, d in (("kernel", "float32"), ("kernel", "bfloat16"), ("reference", "float32"))
        for sm in (False, True)
    }
    assert all(c["matched"] and c["max_scaled_error"] <= c["tolerance"] for c in cells)


def test_a_backend_off_the_reference_or_raising_fails_the_smoke(monkeypatch) -> None:
    def off(*args, backend, softmax):
        if backend == "triton":
            raise RuntimeError("triton: no GPU")
        return ms_deform_attn(*args, softmax=softmax, backend="reference") * 1.001

    monkeypatch.setattr(gpu_smoke, "BACKENDS", ("kernel", "triton"))
    monkeypatch.setattr(gpu_smoke, "ms_deform_attn", off)
    cells = gpu_smoke.smoke("cpu", [torch.float32])
    assert not any(c["matched"] for c in cells)
    assert {c.get("error") for c in cells if c["backend"] == "triton"} == {
        "RuntimeError('triton: no GPU')"
    }
    assert all(c["max_scaled_error"] > c["tolerance"] for c in cells if c["backend"] == "kernel")
    assert gpu_smoke.main(["--dry-run"]) == 1
