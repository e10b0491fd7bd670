"""The Triton backend's launch configs: each one computes the reference's answer, the GPU
choice keeps the fastest and times once, and every candidate compiles without spills
(with its ptxas registers recorded in benchmarks/results/triton_ptxas.json).

The ``interpreter`` cases run in the child process of
tests/test_msda_triton.py::test_interpreter_cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from msda_ops.testing import random_inputs
from support.msda_compare import assert_matches, float64_oracle
from support.triton_interpreter import DEVICES, interpreting, require

TESTS = Path(__file__).resolve().parent
RECORD = TESTS.parent / "benchmarks" / "results" / "triton_ptxas.json"


@pytest.fixture(params=DEVICES)
def device(request):
    return require(request.param)


def _configs():
    pytest.importorskip("triton")
    from msda_ops.triton_tuning import CONFIGS

    return CONFIGS


@pytest.mark.parametrize("index", range(5))
def test_every_config_matches_the_reference(device, index):
    """Forward and backward with each candidate launch shape against the float64 reference
    (D = 9 and L*P = 15 leave partial tiles in every direction)."""
    from msda_ops import triton_ops

    config = _configs()[index]
    args = random_inputs(1, 3, 2, 9, [(3, 5), (2, 2), (1, 3)], 5, device=device, spread=0.2)
    go = torch.randn(1, 3, 18, generator=torch.Generator().manual_seed(2)).to(device)
    out = triton_ops._launch_forward(*args, True, config)
    grads = triton_ops._launch_backward(go, *args, True, config)
    expected, expected_grads = float64_oracle(args, go, softmax=True)
    assert_matches(out, expected, torch.float32, f"output {config}")
    for name, got, exp in zip(
        ("value", "locations", "weights"), grads, expected_grads, strict=True
    ):
        assert_matches(got, exp, torch.float32, f"grad_{name} {config}")


def test_choose_keeps_the_fastest_and_times_once(monkeypatch):
    from msda_ops import triton_tuning

    configs = _configs()
    monkeypatch.setattr(triton_tuning, "_chosen", {})
    speed = {config: 5.0 + i for i, config in enumerate(configs)}
    speed[configs[3]] = 1.0
    timed = []

    def timer(run):
        return run()

    def run(config):
        timed.append(config)
        if config == configs[1]:
            raise RuntimeError("out of resources")  # skipped, not fatal
        return speed[config]

    assert triton_tuning.choose("key", run, True, timer) == configs[3]
    assert triton_tuning.choose("key", run, True, timer) == configs[3]
    assert timed == list(configs)  # each candidate timed once, and only for the first call
    assert triton_tuning.choose("other", run, False, timer) == triton_tuning.DEFAULT
    assert len(timed) == len(configs)  # disabled: nothing timed, nothing remembered
    assert "other" not in triton_tuning._chosen


def test_no_timing_off_cuda_or_when_disabled(monkeypatch):
    from msda_ops.triton_tuning import tuning_enabled

    _configs()
    assert not tuning_enabled(torch.device("cpu"), interpreted=True)
    assert not tuning_enabled(torch.device("cuda"), interpreted=True)
    monkeypatch.setenv("MSDA_OPS_TRITON_AUTOTUNE", "0")
    assert not tuning_enabled(torch.device("cuda"), interpreted=False)


def test_the_ptxas_record_covers_every_config_without_spills():
    configs = _configs()
    rows = json.loads(RECORD.read_text())["rows"]
    recorded = {(r["config"]["tile"], r["config"]["per_thread"]) for r in rows}
    assert recorded == set(configs), "rerun python benchmarks/triton_ptxas.py"
    assert all(r["spill_bytes"] == 0 for r in rows), [r for r in rows if r["spill_bytes"]]


@pytest.mark.parametrize("index", range(5))
def test_every_config_compiles_without_spills(index):
    """The backward at the encoder shape, sm_90 float32, compiled now with ptxas."""
    config = _configs()[index]
    if interpreting():
        pytest.skip("the kernels are interpreted in this process")
    from support.triton_compile import compile_report

    report = compile_report("backward", "fp32", True, 22223, 16, 32, 90, config)
    assert report.spill_bytes == 0, report
