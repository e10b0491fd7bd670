"""Does an msda implementation agree with the float64 reference? (GPU smoke and bench_msda.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from msda_ops import ms_deform_attn_reference

# Largest max|got - expected| / max(1, max|expected|) accepted, per input dtype. Looser than the
# unit tests' (tests/support/msda_compare.py): benchmark shapes sum up to 16 * 4 samples per
# output over maps of 20k pixels, and atomics add value gradients in any order.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 6e-2}

Impl = Callable[..., Tensor]  # (value, shapes, starts, locations, weights, softmax) -> output


def _scaled_error(got: Tensor, expected: Tensor) -> float:
    if got.shape != expected.shape:
        return float("inf")
    if not got.numel():
        return 0.0
    diff = (got.double() - expected.double()).abs().max().item()
    return float(diff / max(1.0, expected.abs().max().item()))


def _forward_backward(
    impl: Impl, args: tuple[Tensor, ...], softmax: bool, grad: Tensor
) -> list[Tensor]:
    out = impl(*args, softmax)
    floats = [args[0], args[3], args[4]]
    return [out, *torch.autograd.grad(out, floats, grad.to(out.dtype))]


def compare_to_reference(impl: Impl, args: tuple[Tensor, ...], softmax: bool) -> dict[str, Any]:
    """One forward + backward of ``impl`` against the reference in float64 on the same inputs.

    Args:
        impl: the implementation under test.
        args: value (N, S, M, D), shapes (L, 2), starts (L,), locations (N, Lq, M, L, P, 2),
            weights (N, Lq, M, L, P); the three float tensors with ``requires_grad``.

    Returns:
        ``max_scaled_error`` over the output and the three gradients, ``tolerance`` for the
        inputs' dtype and ``matched`` (the error is within it, and nothing is NaN).
    """
    dtype = args[0].dtype
    copies = [a.detach().clone() for a in args]
    for i in (0, 3, 4):
        copies[i] = copies[i].double().requires_grad_()
    gen = torch.Generator().manual_seed(11)
    n, lq, m = args[3].shape[:3]
    grad = torch.randn(n, lq, m * args[0].shape[3], generator=gen, dtype=torch.float64)
    grad = grad.to(args[0].device)
    expected = _forward_backward(
        lambda *a: ms_deform_attn_reference(*a[:5], softmax=a[5]), tuple(copies), softmax, grad
    )
    got = _forward_backward(impl, args, softmax, grad)
    errors = [_scaled_error(g, e) for g, e in zip(got, expected, strict=True)]
    nan = any(bool(g.isnan().any()) for g in got)
    error = max(errors)
    return {
        "max_scaled_error": error,
        "tolerance": TOLERANCE[dtype],
        "matched": not nan and error <= TOLERANCE[dtype],
    }
