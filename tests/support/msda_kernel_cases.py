"""Shared by the kernel tests of every device (tests/test_msda_cpu.py, tests/test_msda_gpu.py).

One test body runs over device x dtype x layout, as torchvision's ``RoIOpTester`` does:
``DEVICES`` marks the CUDA case ``gpu`` (skipped without a device), and the helpers here
call the kernels, place inputs at storage offsets, and compare with the float64 reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

from msda_ops import ms_deform_attn_reference

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]
Args = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


def kernel(*args: Tensor, softmax: bool = False) -> Tensor:
    """The compiled kernel of the inputs' device, through its torch.library op."""
    return torch.ops.msda_ops.ms_deform_attn_forward(*args, softmax)


def softmax_reference(
    value: Tensor, shapes: Tensor, starts: Tensor, locations: Tensor, logits: Tensor
) -> Tensor:
    """The reference on softmax(logits) over the L*P samples of each (query, head)."""
    n, lq, m, levels, points = logits.shape
    weights = logits.flatten(3).softmax(-1).view(n, lq, m, levels, points)
    return ms_deform_attn_reference(value, shapes, starts, locations, weights)


def forward_and_grads(
    fn: Callable[..., Tensor], args: Sequence[Tensor], grad_output: Tensor | None = None
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """fn(*args) and the gradients of <fn(*args), grad_output> for the three float inputs."""
    out = fn(*args)
    if grad_output is None:
        grad_output = torch.randn(
            out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
        )
    grads = torch.autograd.grad(
        out, (args[0], args[3], args[4]), grad_output.to(device=out.device, dtype=out.dtype)
    )
    return out, grads


def at_offset(t: Tensor, offset: int) -> Tensor:
    """A copy of ``t`` that starts ``offset`` elements into its storage (misaligned rows)."""
    flat = torch.full((t.numel() + offset,), float("nan"), dtype=t.dtype, device=t.device)
    view = flat[offset:].view(t.shape)
    view.copy_(t)
    assert view.storage_offset() == offset
    return view


def as_float64(args: Sequence[Tensor]) -> list[Tensor]:
    """The float inputs as float64 leaves (the exact rounded values), others unchanged."""
    return [a.detach().double().requires_grad_() if a.is_floating_point() else a for a in args]


def assert_close_to(got: Tensor, expected: Tensor, tol: float, name: str) -> None:
    """|got - expected| <= tol * max|expected|, NaN exactly where expected has NaN."""
    got, expected = got.double(), expected.double()
    assert torch.equal(got.isnan(), expected.isnan()), f"{name}: NaN pattern differs"
    finite = expected.isfinite()
    scale = expected[finite].abs().max().item() if finite.any() else 0.0
    error = (got[finite] - expected[finite]).abs().max().item() if finite.any() else 0.0
    assert error <= tol * max(scale, 1e-3), f"{name}: error {error:.3g}, scale {scale:.3g}"
