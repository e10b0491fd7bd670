"""Python side of the ``torch.ops.msda_ops`` custom ops: loading, fake tensors, autograd.

The schemas live in C++ (``csrc/msda_ops.cpp``)::

    msda_ops::ms_deform_attn_forward(value, spatial_shapes, level_start_index,
                                     sampling_locations, attention_weights,
                                     softmax=False) -> output
    msda_ops::ms_deform_attn_backward(grad_output, value, spatial_shapes, level_start_index,
                                      sampling_locations, attention_weights, softmax=False)
        -> (grad_value, grad_sampling_locations, grad_attention_weights)

With ``softmax=True`` attention_weights are raw logits; the kernels apply the softmax over
the L*P samples of each (query, head) themselves, and grad_attention_weights is the gradient
with respect to the logits.

Here they get fake-tensor implementations (shapes only, for ``torch.compile`` and
``torch.export``) and autograd: the forward's backward is the backward op, so compiled
graphs contain both. Differentiating the backward op again raises.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

_lock = threading.Lock()
_loaded: dict[str, bool] = {}  # library kind -> loaded (False: failed, warned once)
_failures: dict[str, str] = {}


def _forward_fake(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    softmax: bool = False,
) -> Tensor:
    n, _, m, d = value.shape
    return value.new_empty((n, sampling_locations.shape[1], m * d))


def _backward_fake(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    softmax: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    # The kernels return fresh contiguous gradients in each input's dtype.
    contiguous = torch.contiguous_format
    return (
        torch.empty_like(value, memory_format=contiguous),
        torch.empty_like(sampling_locations, memory_format=contiguous),
        torch.empty_like(attention_weights, memory_format=contiguous),
    )


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs[:5])
    ctx.softmax = inputs[5]


def _no_context(ctx: Any, inputs: tuple[Tensor, ...], output: Any) -> None:
    pass


def register_python_side(forward: str, backward: str, backend: str) -> None:
    """Fake tensors and autograd for a forward/backward op pair with this module's schemas.

    The forward's backward is ``backward`` (so compiled graphs contain both); differentiating
    ``backward`` again raises. Shared by the compiled kernels and the Triton backend.
    """
    namespace, name = backward.split("::")
    backward_op = getattr(getattr(torch.ops, namespace), name)

    def gradients(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        value, spatial_shapes, level_start_index, locations, weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = backward_op(
            grad_output, value, spatial_shapes, level_start_index, locations, weights, ctx.softmax
        )
        needs = ctx.needs_input_grad
        return (
            grad_value if needs[0] else None,
            None,
            None,
            grad_locations if needs[3] else None,
            grad_weights if needs[4] else None,
            None,
        )

    def no_double_backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        raise RuntimeError(
            f"msda_ops: the {backend} backward is not differentiable (double backward); "
            "use ms_deform_attn(..., backend='reference') for higher-order gradients"
        )

    torch.library.register_fake(forward)(_forward_fake)
    torch.library.register_fake(backward)(_backward_fake)
    torch.library.register_autograd(forward, gradients, setup_context=_setup_context)
    torch.library.register_autograd(backward, no_double_backward, setup_context=_no_context)


def _load(kind: str) -> None:
    # Imported here so that `python -m msda_ops.build` does not find itself pre-imported.
    from msda_ops import build

    build.load_library(kind)
    if kind == "cpu":
        try:
            register_python_side(
                "msda_ops::ms_deform_attn_forward", "msda_ops::ms_deform_attn_backward", "kernel"
            )
        except Exception as exc:  # an op without autograd must not be used: fall back
            raise build.BuildError(f"registering the ops with torch failed: {exc}") from exc


def load_state(kind: str) -> bool | None:
    """Whether library ``kind`` is loaded (True), failed to load (False) or was not tried."""
    return _loaded.get(kind)


def load_failure(kind: str) -> str | None:
    """Why library ``kind`` did not load, after a failed attempt; else None."""
    return _failures.get(kind)


def load(kind: str) -> bool:
    """Load (compiling on first use) library ``kind``; False, with the reason kept, on failure.

    The CPU library defines the schemas, so it is loaded before the CUDA one.
    """
    from msda_ops.build import BuildError

    with _lock:
        for needed in ("cpu", kind) if kind != "cpu" else ("cpu",):
            if needed not in _loaded:
                try:
                    _load(needed)
                    _loaded[needed] = True
                except BuildError as exc:
                    _loaded[needed] = False
                    _failures[needed] = str(exc)
            if not _loaded[needed]:
                if needed != kind:
                    _failures[kind] = _failures[needed]
                return False
        return True


_warned: set[str] = set()

F = TypeVar("F", bound=Callable[..., Any])


def constant_under_compile(fn: F) -> F:
    """``torch.compiler.assume_constant_result`` without importing ``torch._dynamo``.

    torch's decorator imports Dynamo (1.7 s, nearly half of ``import msda_ops``) only to
    set one attribute on ``fn``; Dynamo reads it when it traces a call. This sets the same
    attribute; ``tests/test_msda_backends.py`` checks that it is exactly what torch's
    decorator sets, so a torch that changes the mechanism fails the test, not users.
    """
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


@constant_under_compile
def kernel_available(device_type: str, required: bool = False) -> bool:
    """Whether the compiled kernel serves ``device_type``; builds it on first call.

    Warns once per device type when a build was attempted and failed; with ``required``
    raises RuntimeError instead. Devices without a kernel (e.g. ``mps``) return False
    silently under ``required=False``. ``torch.compile`` evaluates this once at trace time.
    """
    if device_type not in ("cpu", "cuda"):
        if required:
            raise RuntimeError(f"msda_ops: no kernel for device type {device_type!r}")
        return False
    if load(device_type):
        return True
    reason = _failures[device_type]
    if required:
        raise RuntimeError(f"msda_ops: the {device_type} kernel is unavailable: {reason}")
    if device_type not in _warned:
        _warned.add(device_type)
        warnings.warn(
            f"msda_ops: the {device_type} kernel is unavailable ({reason}); "
            "using the slower PyTorch reference",
            RuntimeWarning,
            stacklevel=3,
        )
    return False
