"""The compiled kernels (C++ on CPU, CUDA on GPU) against the reference.

One body per check, parametrized over device x dtype x layout; the CUDA cases are marked
``gpu`` and skip without a device (``make test-gpu`` runs them). The CUDA kernels also run
in every ``make test`` on emulated warps (tests/cuda_emu). GPU-only checks (streams, graphs,
autocast, huge indices) are in tests/test_msda_gpu.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from msda_ops.testing import random_inputs
from support.msda_kernel_cases import (
    DEVICES,
    as_float64,
    assert_close_to,
    at_offset,
    forward_and_grads,
    kernel,
    softmax_reference,
)

from msda_ops import ms_deform_attn, ms_deform_attn_reference, ops


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """Each device whose kernel is compiled (or loaded from the cache) for this session."""
    assert ops.kernel_available(request.param, True)
    return request.param


@st.composite
def problems(draw):
    """Sizes around the edge cases: D = 1 or not a power of two, 1x1 levels, far locations."""
    shapes = draw(
        st.lists(
            st.tuples(st.integers(1, 9), st.integers(1, 9)) | st.just((1, 1)),
            min_size=1,
            max_size=4,
        )
    )
    return {
        "batch": draw(st.integers(1, 3)),
        "queries": draw(st.integers(1, 7)),
        "heads": draw(st.integers(1, 3)),
        "channels": draw(st.sampled_from([1, 2, 3, 5, 8, 13, 32, 64])),
        "shapes": shapes,
        "points": draw(st.integers(1, 4)),
        "spread": draw(st.sampled_from([0.0, 0.3, 2.0])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@settings(max_examples=60, deadline=None)
@given(problem=problems())
def test_float64_kernel_equals_reference(problem):
    _float64_kernel_equals_reference(problem)


@settings(max_examples=30, deadline=None)
@given(problem=problems())
def test_float64_framed_copy_equals_reference(problem):
    """As many queries as the CPU kernel's framed copy of a head has pixels (the sum over
    the levels of (H + 2)(W + 2)): every head, and every level of it, is read from the copy."""
    problem["queries"] = sum((h + 2) * (w + 2) for h, w in problem["shapes"])
    _float64_kernel_equals_reference(problem)


def _float64_kernel_equals_reference(problem: dict) -> None:
    assert ops.kernel_available("cpu", True)
    args = random_inputs(**problem, dtype=torch.float64, requires_grad=True)
    out, grads = forward_and_grads(kernel, args)
    out_ref, grads_ref = forward_and_grads(ms_deform_attn_reference, args)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    for name, got, expected in zip(
        ("value", "locations", "weights"), grads, grads_ref, strict=True
    ):
        # Location gradients scale with W and H, hence a relative term.
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, msg=name)


# D: every vector width and group size of the CUDA kernels (float64: VEC 2 or 1; D = 3:
# G = 3 atomics; D = 128: G = 64 > 32 atomics), and the CPU's specialised D = 32, 64.
@pytest.mark.parametrize("channels", [1, 2, 3, 8, 32, 64, 128])
@pytest.mark.parametrize("spread", [0.0, 0.5])
def test_float64_equals_reference(device, channels, spread):
    args = random_inputs(
        2, 7, 3, channels, [(9, 7), (3, 5), (1, 1)], 3, dtype=torch.float64, device=device,
        seed=channels, spread=spread, requires_grad=True,
    )  # fmt: skip
    out, grads = forward_and_grads(kernel, args)
    out_ref, grads_ref = forward_and_grads(ms_deform_attn_reference, args)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(device, seed):
    args = random_inputs(
        2, 3, 2, 3, [(3, 4), (2, 2), (1, 1)], 2, dtype=torch.float64, device=device,
        seed=seed, spread=0.2, requires_grad=True,
    )  # fmt: skip
    assert torch.autograd.gradcheck(kernel, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("softmax", [False, True])
def test_gradcheck_non_contiguous_and_misaligned(device, softmax):
    value, shapes, starts, locations, weights = random_inputs(
        1, 3, 2, 4, [(3, 3), (2, 1)], 2, dtype=torch.float64, device=device, seed=5
    )
    # value one element into its storage (the CUDA kernels drop to scalar loads), locations
    # and weights as strided views.
    value = at_offset(value, 1).requires_grad_()
    locations = torch.cat([locations, locations], dim=-2)[..., ::2, :].detach().requires_grad_()
    weights = weights.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    assert not (locations.is_contiguous() or weights.is_contiguous())
    args = (value, shapes, starts, locations, weights)
    assert torch.autograd.gradcheck(
        lambda *a: kernel(*a, softmax=softmax), args, eps=1e-6, atol=1e-7
    )
    contiguous = [a.detach().contiguous() for a in args]
    expected = (softmax_reference if softmax else ms_deform_attn_reference)(*contiguous)
    torch.testing.assert_close(kernel(*args, softmax=softmax), expected, rtol=0, atol=1e-12)


# Storage offsets 1, 2, 4 of value and grad_output take every vector width of the CUDA
# loads; D covers widths and group sizes, D = 512 the atomic path in float16.
@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-5), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)]
)
@pytest.mark.parametrize(("channels", "offset"), [(1, 1), (2, 2), (4, 4), (6, 1), (12, 2),
                                                  (24, 4), (512, 0)])  # fmt: skip
def test_low_precision_close_to_float64(device, dtype, tol, channels, offset):
    value, shapes, starts, locations, weights = random_inputs(
        2, 9, 2, channels, [(12, 10), (6, 5), (3, 3), (1, 2)], 4, dtype=dtype, device=device,
        seed=channels, spread=0.1,
    )  # fmt: skip
    args = (at_offset(value, offset).requires_grad_(), shapes, starts,
            locations.requires_grad_(), weights.requires_grad_())  # fmt: skip
    # The float64 oracle sees exactly the (rounded) low-precision inputs.
    grad_output = at_offset(
        torch.randn(2, 9, 2 * channels, generator=torch.Generator().manual_seed(4)).to(
            device=device, dtype=dtype
        ),
        offset,
    )
    out, grads = forward_and_grads(kernel, args, grad_output)
    out64, grads64 = forward_and_grads(ms_deform_attn_reference, as_float64(args), grad_output)
    assert out.dtype == dtype and [g.dtype for g in grads] == [dtype] * 3
    for name, got, expected in zip(
        ("output", "value", "locations", "weights"), (out, *grads), (out64, *grads64), strict=True
    ):
        assert_close_to(got, expected, tol, name)


@pytest.mark.parametrize(("batch", "queries"), [(0, 3), (2, 0)])
@pytest.mark.parametrize("softmax", [False, True])
def test_empty_batch_or_queries(device, batch, queries, softmax):
    args = random_inputs(batch, queries, 2, 4, [(3, 3), (2, 2)], 2, device=device,
                         requires_grad=True)  # fmt: skip
    out = kernel(*args, softmax=softmax)
    assert out.shape == (batch, queries, 8)
    grads = torch.autograd.grad(out.sum(), (args[0], args[3], args[4]), allow_unused=True)
    for grad, arg in zip(grads, (args[0], args[3], args[4]), strict=True):
        assert grad is not None and grad.shape == arg.shape
        assert torch.equal(grad, torch.zeros_like(grad))


def test_mixed_float_dtypes(device):
    """float16 value with float32 locations/weights (as under autocast): output in float16."""
    value, shapes, starts, locations, weights = random_inputs(
        1, 5, 2, 4, [(4, 4), (2, 2)], 2, seed=7, device=device
    )
    out = kernel(value.half(), shapes, starts, locations, weights)
    assert out.dtype == torch.float16
    expected = ms_deform_attn_reference(
        value.half().double(), shapes, starts, locations.double(), weights.double()
    )
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-3)
    # The reference takes the same mixture (it is the fallback under autocast too).
    fallback = ms_deform_attn(value.half(), shapes, starts, locations, weights, backend="reference")
    assert fallback.dtype == torch.float16
    torch.testing.assert_close(fallback.double(), expected, rtol=0, atol=2e-3)


# 8 queries x 2 levels x 2 points = 32 samples per head, fewer than the (4+2)(4+2) +
# (2+2)(3+2) = 56 pixels of the CPU kernel's framed copy of a head: read in place; 32 queries
# (128 samples): read from the framed copy.
@pytest.mark.parametrize("queries", [8, 32], ids=["in-place", "framed"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nan_propagates_and_inf_reads_nothing(device, dtype, queries):
    """The op's NaN rule (DESIGN.md): NaN in locations, weights or value reaches the output
    and the gradients; ±inf and far-away locations contribute zero."""
    value, shapes, starts, locations, weights = random_inputs(
        1, queries, 2, 3, [(4, 4), (2, 3)], 2, dtype=dtype, device=device, seed=3, spread=0.2
    )
    nan, inf = float("nan"), float("inf")
    locations[0, 0, 0, 0, 0, 0] = nan  # query 0: a NaN location
    locations[0, 1, 1, 1, 1, 1] = nan
    locations[0, 2, 0, 0, 1, 0] = inf  # queries 2-4: infinite and far locations
    locations[0, 3, 1, 1, 0, 1] = -inf
    locations[0, 4, 0, 0, 0] = torch.tensor([1e30, 2.0**62])
    weights[0, 5, 0, 1, 0] = nan  # query 5: a NaN weight
    value[0, 5, 1] = nan  # a NaN pixel: whatever samples it turns NaN
    args = [t.requires_grad_() for t in (value, locations, weights)]
    args = (args[0], shapes, starts, args[1], args[2])
    out, grads = forward_and_grads(kernel, args)
    # The expectation: the reference with the ±inf/far locations moved to a finite point off
    # the map (grid_sample turns inf into NaN; the op's rule reads nothing there).
    far = locations.detach().clone()
    far[far.isinf() | (far.abs() > 1e3)] = 5.0
    expected_args = (value.detach().double().requires_grad_(), shapes, starts,
                     far.double().requires_grad_(), weights.detach().double().requires_grad_())  # fmt: skip
    out_ref, grads_ref = forward_and_grads(ms_deform_attn_reference, expected_args)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert out[0, 0, :3].isnan().all() and out[0, 5, :3].isnan().all()
    assert not out[0, 2:5].isnan().any()
    assert_close_to(out, out_ref, tol, "output")
    assert_close_to(grads[0], grads_ref[0], tol, "value")
    assert_close_to(grads[2], grads_ref[2], tol, "weights")
    # grid_sample leaves one coordinate's gradient of a NaN location at 0; the op gives NaN
    # for both, so those two samples are checked on their own.
    nan_samples = locations.detach().isnan().any(-1, keepdim=True).expand_as(locations)
    assert grads[1][nan_samples].isnan().all()
    assert_close_to(grads[1][~nan_samples], grads_ref[1][~nan_samples], tol, "locations")


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_softmax_equals_softmax_then_op(device, dtype, tol):
    """softmax=True on raw logits == the op on softmax(logits), values and gradients."""
    value, shapes, starts, locations, _ = random_inputs(
        2, 6, 3, 8, [(6, 5), (3, 3), (1, 2)], 3, dtype=dtype, device=device, seed=11, spread=0.2
    )
    logits = 3 * torch.randn(2, 6, 3, 3, 3, generator=torch.Generator().manual_seed(2))
    args = (value.requires_grad_(), shapes, starts, locations.requires_grad_(),
            logits.to(device=device, dtype=dtype).requires_grad_())  # fmt: skip
    out, grads = forward_and_grads(lambda *a: kernel(*a, softmax=True), args)
    out_ref, grads_ref = forward_and_grads(softmax_reference, args)
    for name, got, expected in zip(
        ("output", "value", "locations", "logits"), (out, *grads), (out_ref, *grads_ref),
        strict=True,
    ):  # fmt: skip
        assert_close_to(got, expected, tol, name)


@pytest.mark.parametrize("softmax", [False, True])
def test_opcheck(device, softmax):
    args = random_inputs(
        2, 4, 2, 3, [(4, 5), (2, 2), (1, 1)], 2, dtype=torch.float64, device=device,
        spread=0.2, requires_grad=True,
    )  # fmt: skip
    torch.library.opcheck(torch.ops.msda_ops.ms_deform_attn_forward.default, (*args, softmax))
    grad_output = torch.randn(2, 4, 6, dtype=torch.float64, device=device)
    detached = tuple(a.detach() for a in args)
    torch.library.opcheck(
        torch.ops.msda_ops.ms_deform_attn_backward.default, (grad_output, *detached, softmax)
    )


def _backward(args, grad_output, softmax=False):
    return torch.ops.msda_ops.ms_deform_attn_backward(grad_output, *args, softmax)


# D = 8: shuffle groups on CUDA; D = 6 (float32: G = 3) and 512 (G = 128): atomics.
@pytest.mark.parametrize("channels", [6, 8, 512])
@pytest.mark.parametrize("softmax", [False, True])
def test_deterministic_backward_repeats_bitwise(device, channels, softmax):
    """Under torch.use_deterministic_algorithms the backward repeats bit for bit and equals
    the default (atomic on CUDA) one; the CPU one owns what it writes in both modes."""
    args = random_inputs(2, 40, 2, channels, [(6, 7), (3, 3)], 4, device=device, seed=channels,
                         spread=0.1)  # fmt: skip
    grad_output = torch.randn(2, 40, 2 * channels, device=device)
    default = _backward(args, grad_output, softmax)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = _backward(args, grad_output, softmax)
        if device == "cpu":
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                second = _backward(args, grad_output, softmax)
            finally:
                torch.set_num_threads(threads)
        else:
            second = _backward(args, grad_output, softmax)
    finally:
        torch.use_deterministic_algorithms(was)
    for a, b, c in zip(first, second, default, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


def test_forward_repeats_bitwise(device):
    args = random_inputs(2, 50, 4, 32, [(16, 12), (8, 6), (4, 3)], 4, device=device, seed=6)
    first = kernel(*args)
    for _ in range(3):
        assert torch.equal(kernel(*args), first)


def test_int32_shapes(device):
    args = random_inputs(2, 3, 2, 4, [(3, 3), (2, 2)], 2, dtype=torch.float64, seed=11,
                         device=device)  # fmt: skip
    int32 = (args[0], args[1].int(), args[2].int(), args[3], args[4])
    torch.testing.assert_close(kernel(*int32), ms_deform_attn_reference(*args), rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch", [3, 65, 67])
def test_any_batch_size(device, batch):
    """The original kernel required N % im2col_step == 0 for N > 64; any N works here."""
    args = random_inputs(batch, 2, 1, 2, [(2, 3)], 1, dtype=torch.float64, seed=2, device=device)
    torch.testing.assert_close(kernel(*args), ms_deform_attn_reference(*args), rtol=0, atol=1e-12)


# The CPU kernel computes the corners of up to 64 samples at a time: more samples per
# (query, head) than that (L * P = 70, 75) go in several blocks, forward and backward. Batch x
# heads = 1 or 2 splits the backward per level (with up to 4 threads), 8 keeps the levels of a
# head in one task. A head (or a level of it) has more samples than its copy framed by zeros
# has pixels here, so the kernel reads it from that copy: one frame per level.
@pytest.mark.parametrize(("levels", "points"), [([(5, 6)], 70), ([(5, 6), (3, 2), (1, 4)], 25)])
@pytest.mark.parametrize(("batch", "heads"), [(1, 1), (1, 2), (2, 4)])
@pytest.mark.parametrize("softmax", [False, True])
def test_float64_many_samples_per_query(levels, points, batch, heads, softmax):
    assert ops.kernel_available("cpu", True)
    args = random_inputs(batch, 3, heads, 32, levels, points, dtype=torch.float64, seed=points,
                         spread=0.2, requires_grad=True)  # fmt: skip
    out, grads = forward_and_grads(lambda *a: kernel(*a, softmax=softmax), args)
    reference = softmax_reference if softmax else ms_deform_attn_reference
    out_ref, grads_ref = forward_and_grads(reference, args)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_framed_copies_larger_than_the_kept_scratch():
    """A framed copy over the 4 MiB the CPU kernel keeps per thread (a 182 x 182 level:
    184^2 pixels x 32 float32 = 4.3 MiB, and as much again for the backward's gradient copy;
    8 heads: one task per head, with 4300 x 8 samples, more than the copy's pixels) replaces
    the 2 MiB a small problem left and is given back within the call; the next small problem
    maps anew. Each against the reference in float64, within what float32 pixel coordinates
    allow: x * W - 0.5 is off by up to W * 2^-24, so on the 182-wide level the float32
    reference itself is 1.2e-5 (of the largest entry) away from the float64 one."""
    assert ops.kernel_available("cpu", True)
    for queries, shape, tol in ((40, (3, 4), 2e-6), (4300, (182, 182), 4e-5), (40, (3, 4), 2e-6)):
        args = random_inputs(1, queries, 8, 32, [shape], 8, seed=queries, spread=0.1,
                             requires_grad=True)  # fmt: skip
        out, grads = forward_and_grads(kernel, args)
        out_ref, grads_ref = forward_and_grads(ms_deform_attn_reference, as_float64(args))
        names = ("output", "value", "locations", "weights")
        for name, got, expected in zip(names, (out, *grads), (out_ref, *grads_ref), strict=True):
            assert_close_to(got, expected, tol, f"{shape}: {name}")


_ISA_CHECK = """
import torch
from msda_ops.testing import random_inputs
from msda_ops import ms_deform_attn_reference
for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
    for channels in (32, 5):  # a specialised head size and the general loop
        args = random_inputs(2, 9, 3, channels, [(7, 5), (3, 4)], 3, dtype=dtype, seed=3,
                             spread=0.2, requires_grad=True)
        grad = torch.randn(2, 9, 3 * channels, dtype=dtype)
        outs = []
        for op in (torch.ops.msda_ops.ms_deform_attn_forward, ms_deform_attn_reference):
            out = op(*args)
            outs.append((out, *torch.autograd.grad(out, (args[0], args[3], args[4]), grad)))
        for got, expected in zip(*outs):
            torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
print("ok")
"""


# The CPU kernel exists as baseline, AVX2 and AVX-512 copies and runs the widest the CPU
# has; MSDA_OPS_CPU_ISA caps it, so the narrower copies are checked on any x86-64 machine.
@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_cpu_isa_copies_equal_reference(isa):
    assert ops.kernel_available("cpu", True)  # built once here, loaded from the cache there
    env = {**os.environ, "MSDA_OPS_CPU_ISA": isa}
    code = "from msda_ops import ops; assert ops.kernel_available('cpu', True)\n" + _ISA_CHECK
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
