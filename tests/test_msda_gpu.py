"""The CUDA kernels: equality with the reference, gradients, precisions, streams, big indices.

All marked ``gpu``: skipped without a CUDA device (run with ``make test-gpu``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from msda_ops.testing import level_start_index, random_inputs

from msda_ops import ms_deform_attn, ms_deform_attn_reference, ops

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def cuda_kernel():
    """Compile (or load from the cache) the CUDA kernels once for this module."""
    assert ops.kernel_available("cuda", True)


def kernel(*args):
    return ms_deform_attn(*args, backend="kernel")


def forward_and_grads(fn, args, grad_output):
    out = fn(*args)
    grads = torch.autograd.grad(out, (args[0], args[3], args[4]), grad_output.to(out.dtype))
    return out, grads


def assert_matches_reference(args, atol=1e-10):
    grad_output = torch.randn(
        args[3].shape[0],
        args[3].shape[1],
        args[0].shape[2] * args[0].shape[3],
        dtype=args[0].dtype,
        device=args[0].device,
    )
    out, grads = forward_and_grads(kernel, args, grad_output)
    out_ref, grads_ref = forward_and_grads(ms_deform_attn_reference, args, grad_output)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=atol)
    for name, got, expected in zip(
        ("value", "locations", "weights"), grads, grads_ref, strict=True
    ):
        torch.testing.assert_close(got, expected, rtol=atol, atol=atol, msg=name)


# D covers: vector widths 2 and 1 for float64, group sizes that shuffle (D=2..64) and ones
# that fall back to atomics (D=3: G=3; D=128: G=64 > 32), and D=1.
@pytest.mark.parametrize("channels", [1, 2, 3, 8, 32, 128])
@pytest.mark.parametrize("spread", [0.0, 0.5])
def test_float64_equals_reference(channels, spread):
    args = random_inputs(
        2,
        7,
        3,
        channels,
        [(9, 7), (3, 5), (1, 1)],
        3,
        dtype=torch.float64,
        device="cuda",
        seed=channels,
        spread=spread,
        requires_grad=True,
    )
    assert_matches_reference(args)


@pytest.mark.parametrize("batch", [1, 3, 65, 67, 130])
def test_any_batch_size(batch):
    args = random_inputs(
        batch,
        5,
        2,
        4,
        [(4, 6), (2, 3)],
        2,
        dtype=torch.float64,
        device="cuda",
        seed=batch,
        requires_grad=True,
    )
    assert_matches_reference(args)


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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(seed):
    args = random_inputs(
        2,
        3,
        2,
        4,
        [(3, 4), (2, 2), (1, 1)],
        2,
        dtype=torch.float64,
        device="cuda",
        seed=seed,
        spread=0.2,
        requires_grad=True,
    )
    assert torch.autograd.gradcheck(kernel, args, eps=1e-6, atol=1e-7)


def test_gradcheck_non_contiguous_and_misaligned():
    value, shapes, starts, locations, weights = random_inputs(
        1, 3, 2, 4, [(3, 3), (2, 1)], 2, dtype=torch.float64, device="cuda", seed=5
    )
    # A storage offset of one element: the kernels must drop to scalar loads.
    padded = torch.cat([value.new_zeros(1), value.flatten()])
    misaligned = padded[1:].view(value.shape).requires_grad_()
    locations = torch.cat([locations, locations], dim=-2)[..., ::2, :].detach().requires_grad_()
    weights = weights.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    args = (misaligned, shapes, starts, locations, weights)
    assert torch.autograd.gradcheck(kernel, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_opcheck(dtype):
    # float64: the atomics' summation order changes the last bits only.
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


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-5), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)]
)
def test_low_precision_close_to_float64(dtype, tol):
    args = random_inputs(
        2,
        50,
        8,
        32,
        [(24, 30), (12, 15), (6, 8), (3, 4)],
        4,
        dtype=dtype,
        device="cuda",
        seed=3,
        spread=0.1,
        requires_grad=True,
    )
    args64 = tuple(
        a.detach().double().requires_grad_() if a.is_floating_point() else a for a in args
    )
    grad_output = torch.randn(2, 50, 256, dtype=torch.float64, device="cuda")
    out, grads = forward_and_grads(kernel, args, grad_output)
    out64, grads64 = forward_and_grads(ms_deform_attn_reference, args64, grad_output)
    assert out.dtype == dtype and [g.dtype for g in grads] == [dtype] * 3
    for got, expected in zip((out, *grads), (out64, *grads64), strict=True):
        assert (got.double() - expected).abs().max() <= tol * expected.abs().max()


@pytest.mark.parametrize("channels", [6, 256])
def test_float32_reduction_by_atomics(channels):
    """G = D / 4 threads per head that do not fit a warp, or not a power of two: atomics."""
    args = random_inputs(
        2, 11, 2, channels, [(6, 7), (2, 3)], 3, device="cuda", seed=channels,
        spread=0.2, requires_grad=True,
    )  # fmt: skip
    args64 = tuple(
        a.detach().double().requires_grad_() if a.is_floating_point() else a for a in args
    )
    grad_output = torch.randn(2, 11, 2 * channels, dtype=torch.float64, device="cuda")
    _, grads = forward_and_grads(kernel, args, grad_output)
    _, grads64 = forward_and_grads(ms_deform_attn_reference, args64, grad_output)
    for got, expected in zip(grads, grads64, strict=True):
        assert (got.double() - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_non_finite_and_far_locations_read_nothing():
    value, shapes, starts, locations, weights = random_inputs(
        1, 6, 1, 4, [(4, 4), (2, 3)], 1, device="cuda"
    )
    far = torch.tensor(
        [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 2.0**62], device="cuda"
    )
    locations[..., 0] = far.view(1, 6, 1, 1, 1)
    args = (
        value.requires_grad_(),
        shapes,
        starts,
        locations.requires_grad_(),
        weights.requires_grad_(),
    )
    out, grads = forward_and_grads(kernel, args, torch.ones(1, 6, 4, device="cuda"))
    for t in (out, *grads):
        assert torch.equal(t, torch.zeros_like(t))


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
