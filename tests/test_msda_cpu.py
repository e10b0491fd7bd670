"""The C++ CPU kernel against the reference: values, gradients, precisions, odd inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from msda_ops.testing import random_inputs

from msda_ops import ms_deform_attn, ms_deform_attn_reference, ops


@pytest.fixture(scope="module", autouse=True)
def cpu_kernel():
    """Compile (or load from the cache) the CPU kernel once for this module."""
    assert ops.kernel_available("cpu", True)


def kernel(*args):
    return ms_deform_attn(*args, backend="kernel")


def forward_and_grads(fn, args, grad_output=None):
    """fn(*args) and the gradients of <fn(*args), grad_output> for the three float inputs."""
    out = fn(*args)
    if grad_output is None:
        grad_output = torch.randn(
            out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
        )
    grads = torch.autograd.grad(out, (args[0], args[3], args[4]), grad_output.to(out.dtype))
    return out, grads


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
    args = random_inputs(**problem, dtype=torch.float64, requires_grad=True)
    out, grads = forward_and_grads(kernel, args)
    out_ref, grads_ref = forward_and_grads(ms_deform_attn_reference, args)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    for name, got, expected in zip(
        ("value", "locations", "weights"), grads, grads_ref, strict=True
    ):
        # Location gradients scale with W and H, hence a relative term.
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("channels", [32, 64])
def test_specialised_head_sizes_equal_reference(channels):
    """D = 32 and 64 run loops compiled for that size: check them explicitly."""
    args = random_inputs(
        2,
        9,
        3,
        channels,
        [(7, 9), (3, 4), (1, 1)],
        3,
        dtype=torch.float64,
        seed=channels,
        spread=0.3,
        requires_grad=True,
    )
    out, grads = forward_and_grads(kernel, args)
    out_ref, grads_ref = forward_and_grads(ms_deform_attn_reference, args)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradcheck(seed):
    args = random_inputs(
        2,
        3,
        2,
        3,
        [(3, 4), (2, 2), (1, 1)],
        2,
        dtype=torch.float64,
        seed=seed,
        spread=0.2,
        requires_grad=True,
    )
    assert torch.autograd.gradcheck(kernel, args, eps=1e-6, atol=1e-7)


def test_gradcheck_non_contiguous():
    value, shapes, starts, locations, weights = random_inputs(
        1, 3, 2, 4, [(3, 3), (2, 1)], 2, dtype=torch.float64, seed=5
    )
    # value as a permuted view, locations and weights as strided slices of larger tensors.
    value = value.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2).requires_grad_()
    locations = torch.cat([locations, locations], dim=-2)[..., ::2, :].detach().requires_grad_()
    weights = weights.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    assert not (value.is_contiguous() or locations.is_contiguous() or weights.is_contiguous())
    args = (value, shapes, starts, locations, weights)
    assert torch.autograd.gradcheck(kernel, args, eps=1e-6, atol=1e-7)
    contiguous = tuple(a.detach().contiguous().requires_grad_(a.requires_grad) for a in args)
    torch.testing.assert_close(
        kernel(*args), ms_deform_attn_reference(*contiguous), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-5), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)]
)
def test_low_precision_close_to_float64(dtype, tol):
    args = random_inputs(
        2,
        20,
        4,
        8,
        [(12, 10), (6, 5), (3, 3), (1, 2)],
        4,
        dtype=dtype,
        seed=3,
        spread=0.1,
        requires_grad=True,
    )
    # The float64 oracle sees exactly the (rounded) low-precision inputs.
    args64 = tuple(
        a.detach().double().requires_grad_() if a.is_floating_point() else a for a in args
    )
    grad_output = torch.randn(
        2, 20, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    out, grads = forward_and_grads(kernel, args, grad_output)
    out64, grads64 = forward_and_grads(ms_deform_attn_reference, args64, grad_output)
    assert out.dtype == dtype and [g.dtype for g in grads] == [dtype] * 3
    for got, expected in zip((out, *grads), (out64, *grads64), strict=True):
        scale = expected.abs().max()
        assert (got.double() - expected).abs().max() <= tol * scale


def test_mixed_float_dtypes():
    """float16 value with float32 locations/weights (as under autocast): output in float16."""
    value, shapes, starts, locations, weights = random_inputs(
        1, 5, 2, 4, [(4, 4), (2, 2)], 2, seed=7
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


def test_non_finite_and_far_locations_read_nothing():
    value, shapes, starts, locations, weights = random_inputs(
        1, 6, 1, 3, [(4, 4), (2, 3)], 1, dtype=torch.float64
    )
    far = torch.tensor(
        [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 2.0**62], dtype=torch.float64
    )
    locations[..., 0] = far.view(1, 6, 1, 1, 1)
    value.requires_grad_()
    locations.requires_grad_()
    weights.requires_grad_()
    out, (grad_value, grad_loc, grad_w) = forward_and_grads(
        kernel, (value, shapes, starts, locations, weights)
    )
    assert torch.equal(out, torch.zeros_like(out))
    for grad in (grad_value, grad_loc, grad_w):
        assert torch.equal(grad, torch.zeros_like(grad))


def test_int32_shapes_and_empty_batch():
    args = random_inputs(2, 3, 2, 4, [(3, 3), (2, 2)], 2, dtype=torch.float64, seed=11)
    int32 = (args[0], args[1].int(), args[2].int(), args[3], args[4])
    torch.testing.assert_close(kernel(*int32), ms_deform_attn_reference(*args), rtol=0, atol=1e-12)
    empty = random_inputs(0, 3, 2, 4, [(3, 3)], 2)
    assert kernel(*empty).shape == (0, 3, 8)


def test_large_batch_needs_no_divisibility():
    """The original kernel required N % im2col_step == 0 for N > 64; any N works here."""
    args = random_inputs(67, 2, 1, 2, [(2, 3)], 1, dtype=torch.float64, seed=2)
    torch.testing.assert_close(kernel(*args), ms_deform_attn_reference(*args), rtol=0, atol=1e-12)
