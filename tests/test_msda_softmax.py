"""``softmax=True`` on every backend: the op takes logits and normalises them over L*P itself.

The expectation is the same op fed explicitly normalised weights (autograd through
``torch.softmax`` for the logits' gradient), and the float64 reference. Triton's CPU cases
run in its interpreter (marker ``interpreter``, started by test_msda_triton.py); CUDA
cases need ``make test-gpu``.
"""

from __future__ import annotations

import pytest
import torch
from msda_ops.testing import random_inputs
from support.msda_compare import (
    TOLERANCE,
    assert_matches,
    float64_oracle,
    forward_and_grads,
    scaled_error,
)
from support.triton_interpreter import require

from msda_ops import ms_deform_attn

BACKENDS = [
    pytest.param(("reference", "cpu"), id="reference-cpu"),
    pytest.param(("kernel", "cpu"), id="kernel-cpu"),
    pytest.param(("triton", "cpu"), id="triton-cpu", marks=pytest.mark.interpreter),
    pytest.param(("reference", "cuda"), id="reference-cuda", marks=pytest.mark.gpu),
    pytest.param(("kernel", "cuda"), id="kernel-cuda", marks=pytest.mark.gpu),
    pytest.param(("triton", "cuda"), id="triton-cuda", marks=pytest.mark.gpu),
]


@pytest.fixture(params=BACKENDS)
def target(request):
    backend, device = request.param
    if backend == "triton":
        require(device)
    return backend, device


def inputs(device, dtype=torch.float32, n=2, lq=5, seed=0, scale=2.0, shift=0.0):
    """Arguments with raw logits (N(shift, scale^2)) in place of normalised weights."""
    value, shapes, starts, loc, w = random_inputs(
        n, lq, 2, 5, [(4, 5), (2, 3), (1, 1)], 3, dtype=dtype, device=device, spread=0.2, seed=seed
    )
    gen = torch.Generator().manual_seed(seed + 1)
    logits = (torch.randn(w.shape, generator=gen, dtype=torch.float64) * scale + shift).to(w)
    return [value.requires_grad_(), shapes, starts, loc.requires_grad_(), logits.requires_grad_()]


def op(backend, softmax):
    def call(*args):
        return ms_deform_attn(*args, softmax=softmax, backend=backend)

    return call


def explicit_softmax(backend):
    """The op fed softmax(logits) computed outside it."""

    def call(value, shapes, starts, loc, logits):
        weights = logits.flatten(3).softmax(-1).view_as(logits)
        return ms_deform_attn(value, shapes, starts, loc, weights, backend=backend)

    return call


def test_fused_equals_softmax_then_op(target):
    """Values and gradients within 1e-6 (scaled by max(1, |expected|)) in float32."""
    backend, device = target
    args = inputs(device)
    grad_output = torch.randn(2, 5, 10, generator=torch.Generator().manual_seed(5)).to(device)
    out, grads = forward_and_grads(op(backend, True), args, grad_output)
    expected, expected_grads = forward_and_grads(explicit_softmax(backend), args, grad_output)
    for name, got, exp in zip(
        ("output", "grad_value", "grad_locations", "grad_logits"),
        (out, *grads),
        (expected, *expected_grads),
        strict=True,
    ):
        assert not got.isnan().any(), name
        assert scaled_error(got, exp) <= 1e-6, (name, scaled_error(got, exp))


def test_against_float64_reference(target):
    backend, device = target
    args = inputs(device, seed=3)
    grad_output = torch.randn(2, 5, 10, generator=torch.Generator().manual_seed(6)).to(device)
    out, grads = forward_and_grads(op(backend, True), args, grad_output)
    expected, expected_grads = float64_oracle(args, grad_output, softmax=True)
    assert_matches(out, expected, torch.float32, "output")
    for name, got, exp in zip(("value", "locations", "logits"), grads, expected_grads, strict=True):
        assert_matches(got, exp, torch.float32, f"grad_{name}")


def test_large_logits_do_not_overflow(target):
    """Logits near 90 overflow exp() in float32 unless the row maximum is subtracted."""
    backend, device = target
    args = inputs(device, seed=4, scale=5.0, shift=90.0)
    out, grads = forward_and_grads(op(backend, True), args)
    expected, expected_grads = forward_and_grads(explicit_softmax("reference"), args)
    for got, exp in zip((out, *grads), (expected, *expected_grads), strict=True):
        assert not got.isnan().any() and not got.isinf().any()
        assert scaled_error(got, exp) <= TOLERANCE[torch.float32]


def test_nan_logit_poisons_its_row_only(target):
    backend, device = target
    args = inputs(device, seed=5)
    with torch.no_grad():
        args[4][1, 2, 0, 1, 2] = float("nan")  # image 1, query 2, head 0
    out, grads = forward_and_grads(op(backend, True), args)
    rows = out.view(2, 5, 2, 5).isnan().any(-1)
    expected_rows = torch.zeros_like(rows)
    expected_rows[1, 2, 0] = True
    assert torch.equal(rows, expected_rows)
    grad_logits = grads[2].flatten(3).isnan().all(-1)
    assert torch.equal(grad_logits, expected_rows)  # softmax backward spreads over the row


@pytest.mark.parametrize("sizes", [(0, 3), (2, 0)], ids=["N0", "Lq0"])
def test_empty(target, sizes):
    backend, device = target
    args = inputs(device, n=sizes[0], lq=sizes[1])
    out, grads = forward_and_grads(op(backend, True), args)
    assert out.shape == (sizes[0], sizes[1], 10)
    assert all(not g.any() for g in grads)


def test_float64_kernel_within_1e_12():
    """On the CPU kernel in float64 the fused softmax equals softmax-then-op to 1e-12."""
    args = inputs("cpu", dtype=torch.float64, seed=7)
    out, grads = forward_and_grads(op("kernel", True), args)
    expected, expected_grads = forward_and_grads(explicit_softmax("kernel"), args)
    for got, exp in zip((out, *grads), (expected, *expected_grads), strict=True):
        assert scaled_error(got, exp) <= 1e-12


@pytest.mark.parametrize(
    "device",
    [
        pytest.param("cpu", marks=pytest.mark.interpreter),
        pytest.param("cuda", marks=pytest.mark.gpu),
    ],
)
def test_half_types_on_triton(device):
    """float16 and bfloat16 logits: against the float64 reference at their tolerance."""
    backend = "triton"
    require(device)
    for dtype in (torch.float16, torch.bfloat16):
        args = inputs(device, dtype=dtype, seed=8)
        grad_output = torch.randn(2, 5, 10, generator=torch.Generator().manual_seed(9))
        grad_output = grad_output.to(device=device, dtype=dtype)
        out, grads = forward_and_grads(op(backend, True), args, grad_output)
        expected, expected_grads = float64_oracle(args, grad_output, softmax=True)
        assert_matches(out, expected, dtype, f"{dtype} output")
        for got, exp in zip(grads, expected_grads, strict=True):
            assert_matches(got, exp, dtype, f"{dtype} gradient")
