"""The public op :func:`ms_deform_attn` and the choice of backend.

Backends:

- ``"kernel"``: the compiled C++ (CPU) or CUDA kernel registered as ``torch.ops.msda_ops``;
  compiled on first use (see :mod:`msda_ops.build`).
- ``"triton"``: Triton kernels for CUDA tensors (:mod:`msda_ops.triton_ops`), float32/
  float16/bfloat16; needs no compiler, only the ``triton`` package that torch's Linux
  wheels bring.
- ``"reference"``: the pure-PyTorch ``grid_sample`` composition in :mod:`msda_ops.reference`.
- ``"auto"`` (default): see :mod:`msda_ops.dispatch` (CPU: kernel, else reference; CUDA:
  kernel, else Triton, else reference; one warning saying which runs and why).

The choice, most specific first: the ``backend=`` keyword, the innermost
:func:`use_backend` block, the ``MSDA_OPS_BACKEND`` environment variable, ``"auto"``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor

from msda_ops import dispatch, ops
from msda_ops.checks import TRITON_DTYPES, check_inputs, check_triton_inputs
from msda_ops.reference import ms_deform_attn_reference

Backend = Literal["auto", "kernel", "triton", "reference"]
_BACKENDS = ("auto", "kernel", "triton", "reference")

# Process-wide (not per-thread) so torch.compile can guard on it like any global.
_override: list[str] = []


@contextlib.contextmanager
def use_backend(backend: Backend) -> Iterator[None]:
    """Run :func:`ms_deform_attn` calls inside the block on ``backend`` (process-wide).

    Example::

        with msda_ops.use_backend("reference"):
            out = model(images)
    """
    _validate_backend(backend)
    _override.append(backend)
    try:
        yield
    finally:
        _override.pop()


def _validate_backend(backend: str) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"ms_deform_attn: backend must be one of {_BACKENDS}, got {backend!r}")


def _requested_backend(backend: str | None) -> str:
    if backend is not None:
        _validate_backend(backend)
        return backend
    if _override:
        return _override[-1]
    env = os.environ.get("MSDA_OPS_BACKEND", "auto").strip().lower() or "auto"
    if env not in _BACKENDS:
        raise ValueError(f"MSDA_OPS_BACKEND must be one of {_BACKENDS}, got {env!r}")
    return env


def level_start_index(spatial_shapes: Tensor) -> Tensor:
    """Offsets of the levels in the flattened maps: exclusive cumsum of H*W.

    Args:
        spatial_shapes: int64 (L, 2), rows (H_l, W_l).

    Returns:
        int64 (L,) on the device of ``spatial_shapes``.
    """
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    *,
    softmax: bool = False,
    backend: Backend | None = None,
) -> Tensor:
    """Multi-scale deformable attention (Deformable DETR), differentiable in all float inputs.

    A location (x, y) in [0, 1] maps to pixel (x*W - 0.5, y*H - 0.5) of its level; the
    value there is interpolated bilinearly, corners outside the map contributing zero, and
    the samples are summed with their attention weights.

    NaN and infinities, the same on every backend (msda_ops/README.md): NaN in any input
    propagates to the output and the gradients (a NaN location: its output row and its own
    location and weight gradients); infinite and far-away locations contribute zero; the
    output is IEEE arithmetic of sum w * bilinear sample with the sample formed first (0
    outside the map, so an infinite weight gives ±inf, or NaN where its sample is 0); the
    location gradients of a sample with a non-finite weight are NaN.

    Args:
        value: (N, S, M, D) with S = sum_l H_l * W_l; float64/32/16 or bfloat16.
        spatial_shapes: int64 (L, 2), rows (H_l, W_l); same device as ``value``.
        level_start_index: int64 (L,), offset of each level in S.
        sampling_locations: (N, Lq, M, L, P, 2) as (x, y) normalised to [0, 1].
        attention_weights: (N, Lq, M, L, P), usually softmax-normalised over L*P; with
            ``softmax=True`` the raw logits instead.
        softmax: apply the softmax over the L*P samples of each (query, head) inside the
            op, forward and backward (the gradient returned is the logits' gradient).
        backend: ``"auto"``, ``"kernel"``, ``"triton"`` or ``"reference"``; None follows
            :func:`use_backend` / ``MSDA_OPS_BACKEND`` / ``"auto"``.

    Returns:
        (N, Lq, M * D), dtype of ``value``.

    Raises:
        TypeError / ValueError: inputs of the wrong dtype, rank, size or device (float64
            on the triton backend included), naming the argument; see
            :mod:`msda_ops.checks` for what is checked when.
        RuntimeError: ``backend="kernel"`` or ``"triton"`` when it is unavailable for the
            inputs' device.
    """
    # The one validation of the call: the backends below trust it.
    check_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, softmax
    )
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    requested = _requested_backend(backend)
    device_type = value.device.type
    if requested == "auto":
        floats = (value.dtype, sampling_locations.dtype, attention_weights.dtype)
        chosen = dispatch.auto_backend(device_type, all(t in TRITON_DTYPES for t in floats))
    elif requested == "kernel":
        ops.kernel_available(device_type, True)
        chosen = "kernel"
    else:
        chosen = requested
    if chosen == "triton":
        dispatch.require_triton()
        from msda_ops import triton_ops

        check_triton_inputs(value, sampling_locations, attention_weights, triton_ops.interpreted())
        return torch.ops.msda_triton.ms_deform_attn_forward(*args, softmax)
    if chosen == "kernel":
        return torch.ops.msda_ops.ms_deform_attn_forward(*args, softmax)
    return ms_deform_attn_reference(*args, softmax=softmax)
