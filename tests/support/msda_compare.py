"""Helpers of the msda_ops backend tests: NaN-padded views, float64 oracles, scaled errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from msda_ops import ms_deform_attn_reference

FLOAT_ARGS = (0, 3, 4)  # value, sampling_locations, attention_weights
# Largest |got - expected| / max(1, max |expected|) accepted per compute dtype.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def inside_poison(t: Tensor, step: int = 2, offset: int = 1) -> Tensor:
    """A copy of ``t`` as a strided view inside a larger buffer filled with poison.

    Every dimension has stride ``step`` times the packed one and the view starts ``offset``
    elements into the storage, so any read that a mask should have stopped lands on
    poison: NaN for float tensors, -1 for integer ones.
    """
    poison = float("nan") if t.is_floating_point() else -1
    buffer = torch.full(
        [step * s + offset for s in t.shape], poison, dtype=t.dtype, device=t.device
    )
    index = tuple(slice(offset, offset + step * s, step) for s in t.shape)
    view = buffer[index]
    view.copy_(t)
    assert not view.is_contiguous() or t.numel() <= 1
    return view.requires_grad_(t.requires_grad)


def forward_and_grads(
    fn: Callable[..., Tensor],
    args: Sequence[Tensor],
    grad_output: Tensor | None = None,
    **kw: object,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Output and the gradients of (value, locations, weights) for ``sum(out * grad_output)``."""
    out = fn(*args, **kw)
    if grad_output is None:
        grad_output = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out)
    floats = [args[i] for i in FLOAT_ARGS]
    grads = torch.autograd.grad(out, floats, grad_output, allow_unused=True)
    return out, tuple(
        g if g is not None else torch.zeros_like(f) for g, f in zip(grads, floats, strict=True)
    )


def float64_oracle(
    args: Sequence[Tensor], grad_output: Tensor, softmax: bool = False
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The reference in float64 on contiguous copies of the same (already rounded) inputs."""
    copies = [a.detach().contiguous() for a in args]
    for i in FLOAT_ARGS:
        copies[i] = copies[i].double().requires_grad_()
    return forward_and_grads(
        ms_deform_attn_reference, copies, grad_output.double().contiguous(), softmax=softmax
    )


def scaled_error(got: Tensor, expected: Tensor) -> float:
    """max |got - expected| / max(1, max |expected|), NaN-free inputs expected."""
    diff = (got.double() - expected.double()).abs().max().item() if got.numel() else 0.0
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    return diff / scale


def assert_matches(got: Tensor, expected: Tensor, dtype: torch.dtype, what: str) -> None:
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    assert not got.isnan().any(), f"{what}: NaN in the result"
    error = scaled_error(got, expected)
    assert error <= TOLERANCE[dtype], f"{what}: scaled error {error:.3g} > {TOLERANCE[dtype]}"


def assert_same_ieee(got: Tensor, expected: Tensor, dtype: torch.dtype, what: str) -> None:
    """NaN where ``expected`` is NaN, the same ±inf where it is infinite, close elsewhere."""
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    got, expected = got.detach().cpu().double(), expected.detach().cpu().double()
    nan = expected.isnan()
    assert torch.equal(got.isnan(), nan), (
        f"{what}: NaN at {got.isnan().nonzero().tolist()}, expected at {nan.nonzero().tolist()}"
    )
    inf = expected.isinf()
    assert torch.equal(got.isinf(), inf), (
        f"{what}: inf at {got.isinf().nonzero().tolist()}, expected at {inf.nonzero().tolist()}"
    )
    assert torch.equal(got[inf], expected[inf]), f"{what}: infinities of another sign"
    finite = expected.isfinite()
    error = scaled_error(got[finite], expected[finite])
    assert error <= TOLERANCE[dtype], f"{what}: scaled error {error:.3g} > {TOLERANCE[dtype]}"
