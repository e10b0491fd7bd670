"""The CUDA kernels beyond the shared checks: streams, graphs, autocast, huge indices.

All marked ``gpu``: skipped without a CUDA device (run with ``make test-gpu``). The checks
shared with the CPU kernel (reference equality per dtype, D and storage offset, gradcheck,
opcheck, NaN rule, softmax, deterministic backward, empty inputs) run on both devices from
one body in tests/test_msda_cpu.py; between GPU runs the kernels run on emulated warps in
every ``make test`` (tests/cuda_emu).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from msda_ops.testing import level_start_index, random_inputs
from support.msda_kernel_cases import assert_close_to, forward_and_grads, kernel

from msda_ops import ms_deform_attn, ms_deform_attn_reference, ops

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def cuda_kernel():
    """Compile (or load from the cache) the CUDA kernels once for this module."""
    assert ops.kernel_available("cuda", True)


def test_cuda_equals_cpu_kernel():
    args = random_inputs(
        2,
        30,
        8,
        32,
        [(16, 20), (8, 10), (4, 5), (2, 3)],
        4,
        dtype=torch.float64,
        seed=9,
        spread=0.1,
    )
    on_gpu = tuple(a.cuda() for a in args)
    torch.testing.assert_close(kernel(*on_gpu).cpu(), kernel(*args), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_low_precision(dtype):
    # The atomics' summation order changes the last bits only.
    args = random_inputs(
        2, 4, 2, 8, [(4, 5), (2, 2)], 2, dtype=dtype, device="cuda", requires_grad=True
    )
    torch.library.opcheck(torch.ops.msda_ops.ms_deform_attn_forward.default, args)
    grad_output = torch.randn(2, 4, 16, device="cuda", dtype=dtype)
    torch.library.opcheck(
        torch.ops.msda_ops.ms_deform_attn_backward.default,
        (grad_output, *(a.detach() for a in args)),
    )


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    args = random_inputs(
        2, 6, 2, 8, [(4, 5), (2, 2)], 2, dtype=torch.float32, device="cuda", requires_grad=True
    )
    grad_output = torch.randn(2, 6, 16, device="cuda")
    compiled = torch.compile(ms_deform_attn, fullgraph=True)
    out, grads = forward_and_grads(compiled, args, grad_output)
    out_eager, grads_eager = forward_and_grads(ms_deform_attn, args, grad_output)
    torch.testing.assert_close(out, out_eager)
    for got, expected in zip(grads, grads_eager, strict=True):
        torch.testing.assert_close(got, expected)


def test_autocast_half_value_with_float32_locations():
    """Under autocast a Linear gives a float16 value while locations stay float32."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = torch.tensor([[8, 8], [4, 4]], device="cuda")
    proj = torch.nn.Linear(16, 16).cuda()
    features = torch.randn(2, 80, 16, device="cuda", generator=gen)
    locations = torch.rand(2, 10, 2, 2, 4, 2, device="cuda", generator=gen).requires_grad_()
    weights = torch.rand(2, 10, 2, 2, 4, device="cuda", generator=gen).requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        value = proj(features).view(2, 80, 2, 8)
        assert value.dtype == torch.float16
        out = ms_deform_attn(
            value, shapes, level_start_index(shapes), locations, weights, backend="kernel"
        )
    assert out.dtype == torch.float16
    expected = ms_deform_attn_reference(
        value.double(), shapes, level_start_index(shapes), locations.double(), weights.double()
    )
    assert_close_to(out, expected, 4e-3, "output")
    out.float().square().sum().backward()
    assert locations.grad is not None and locations.grad.dtype == torch.float32
    assert proj.weight.grad is not None and proj.weight.grad.isfinite().all()


@pytest.mark.parametrize("deterministic", [False, True])
def test_captured_in_a_cuda_graph(deterministic):
    """Forward and backward replayed from a CUDA graph: no host sync, no launch off the
    capturing stream (either makes the capture fail), and the replay computes anew."""
    args = random_inputs(2, 30, 4, 32, [(16, 16), (8, 8)], 4, device="cuda", seed=2,
                         spread=0.1, requires_grad=True)  # fmt: skip
    leaves = (args[0], args[3], args[4])
    grad_output = torch.randn(2, 30, 128, device="cuda")
    torch.use_deterministic_algorithms(deterministic)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as the docs ask
            for _ in range(2):
                torch.autograd.grad(kernel(*args), leaves, grad_output)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = kernel(*args)
            grads = torch.autograd.grad(out, leaves, grad_output)
        fresh = random_inputs(2, 30, 4, 32, [(16, 16), (8, 8)], 4, device="cuda", seed=3,
                              spread=0.1)  # fmt: skip
        with torch.no_grad():
            for leaf, new in zip(leaves, (fresh[0], fresh[3], fresh[4]), strict=True):
                leaf.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        expected_out, expected_grads = forward_and_grads(kernel, args, grad_output)
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=0)
    for got, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_runs_on_the_current_stream():
    args = random_inputs(4, 100, 8, 32, [(32, 32), (16, 16)], 4, device="cuda", seed=1)
    expected = kernel(*args)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = kernel(*args)
    stream.synchronize()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_mixed_devices_rejected():
    value, shapes, starts, locations, weights = random_inputs(
        1, 2, 1, 2, [(2, 2)], 1, device="cuda"
    )
    with pytest.raises(ValueError, match="spatial_shapes on cpu"):
        ms_deform_attn(value, shapes.cpu(), starts, locations, weights)


def test_bad_level_contents_assert_on_device():
    """On CUDA the contents are checked asynchronously: the error surfaces at the next sync."""
    code = (
        "import torch, msda_ops\n"
        "from msda_ops.testing import random_inputs\n"
        "v, s, i, l, w = random_inputs(1, 2, 1, 2, [(3, 3)], 1, device='cuda')\n"
        "msda_ops.ms_deform_attn(v, s + 1, i, l, w)\n"
        "torch.cuda.synchronize()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode != 0
    assert "assert" in proc.stderr.lower()


def test_level_contents_are_queued_once_per_tensor_pair(monkeypatch):
    """Repeated calls with the same level tensors add no check kernel after the first."""
    from msda_ops import checks

    queued = []
    original = checks._queue_device_asserts
    monkeypatch.setattr(checks, "_queue_device_asserts", lambda *a: queued.append(original(*a)))
    args = random_inputs(1, 2, 1, 2, [(3, 3)], 1, device="cuda")
    for _ in range(3):
        ms_deform_attn(*args)
    torch.cuda.synchronize()
    assert len(queued) == 1


def test_debug_flag_checks_level_contents_on_the_host(monkeypatch):
    """MSDA_OPS_CHECK_LEVELS=1: a clear ValueError on CUDA, as on CPU (no device assert)."""
    monkeypatch.setenv("MSDA_OPS_CHECK_LEVELS", "1")
    v, s, i, loc, w = random_inputs(1, 2, 1, 2, [(3, 3)], 1, device="cuda")
    with pytest.raises(ValueError, match="level_start_index is"):
        ms_deform_attn(v, s, i + 1, loc, w)


def test_more_than_2_to_the_31_value_elements():
    """Flat value offsets beyond int32: one level of 16500 x 16500 pixels, 8 float16 channels."""
    height = width = 16500
    channels = 8
    if torch.cuda.mem_get_info()[0] < 24 * 2**30:
        pytest.skip("needs 24 GiB of free GPU memory")
    value = torch.zeros(1, height * width, 1, channels, dtype=torch.float16, device="cuda")
    assert value.numel() > 2**31
    shapes = torch.tensor([[height, width]], device="cuda")
    starts = level_start_index(shapes)
    # Two points near the bottom-right corner, in float32 so they keep their sub-pixel part.
    loc = torch.tensor([[0.99991, 0.99987], [0.99996, 0.99993]], device="cuda")
    locations = loc.view(1, 2, 1, 1, 1, 2)
    weights = torch.full((1, 2, 1, 1, 1), 0.75, device="cuda")
    corners = []  # (query, flat pixel index, weight * bilinear weight)
    for q, (x, y) in enumerate(loc.tolist()):
        px, py = x * width - 0.5, y * height - 0.5
        x0, y0 = int(px // 1), int(py // 1)
        fx, fy = px - x0, py - y0
        for row, col, wt in (
            (y0, x0, (1 - fy) * (1 - fx)),
            (y0, x0 + 1, (1 - fy) * fx),
            (y0 + 1, x0, fy * (1 - fx)),
            (y0 + 1, x0 + 1, fy * fx),
        ):
            if row < height and col < width:
                corners.append((q, row * width + col, 0.75 * wt))
    ramp = torch.linspace(0.1, 1.0, channels, device="cuda")
    for _, index, _ in corners:
        assert index * channels > 2**31
        value[0, index, 0] = (ramp * (1 + index % 7) / 7).half()
    expected = torch.zeros(2, channels, device="cuda")
    for q, index, wt in corners:
        expected[q] += wt * value[0, index, 0].float()
    out = kernel(value, shapes, starts, locations, weights)
    # float32 pixel coordinates near 16500 carry ~1e-3 of rounding: weights agree to ~1e-3.
    torch.testing.assert_close(out[0].float(), expected, rtol=1e-2, atol=1e-2)
    value.requires_grad_()
    (grad_value,) = torch.autograd.grad(
        kernel(value, shapes, starts, locations, weights).float().sum(), value
    )
    per_pixel: dict[int, float] = {}
    for _, index, wt in corners:
        per_pixel[index] = per_pixel.get(index, 0.0) + wt
    assert grad_value.sum(dtype=torch.float32).item() == pytest.approx(
        sum(per_pixel.values()) * channels, rel=1e-2
    )
    for index, wt in per_pixel.items():
        assert grad_value[0, index, 0].float().tolist() == pytest.approx(
            [wt] * channels, rel=1e-2, abs=2e-3
        )
