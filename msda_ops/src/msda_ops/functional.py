"""The public op :func:`ms_deform_attn` and the choice of backend.

Backends:

- ``"kernel"``: the compiled C++ (CPU) or CUDA kernel registered as ``torch.ops.msda_ops``;
  compiled on first use (see :mod:`msda_ops.build`).
- ``"reference"``: the pure-PyTorch ``grid_sample`` composition in :mod:`msda_ops.reference`.
- ``"auto"`` (default): the kernel for the inputs' device when it can be built, the
  reference otherwise (with one warning saying why).

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

from msda_ops import ops
from msda_ops.checks import check_inputs
from msda_ops.reference import ms_deform_attn_reference

Backend = Literal["auto", "kernel", "reference"]
_BACKENDS = ("auto", "kernel", "reference")

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
    backend: Backend | None = None,
) -> Tensor:
    """Multi-scale deformable attention (Deformable DETR), differentiable in all float inputs.

    A location (x, y) in [0, 1] maps to pixel (x*W - 0.5, y*H - 0.5) of its level; the
    value there is interpolated bilinearly, corners outside the map contributing zero, and
    the samples are summed with their attention weights.

    Args:
        value: (N, S, M, D) with S = sum_l H_l * W_l; float64/32/16 or bfloat16.
        spatial_shapes: int64 (L, 2), rows (H_l, W_l); same device as ``value``.
        level_start_index: int64 (L,), offset of each level in S.
        sampling_locations: (N, Lq, M, L, P, 2) as (x, y) normalised to [0, 1].
        attention_weights: (N, Lq, M, L, P), usually softmax-normalised over L*P.
        backend: ``"auto"``, ``"kernel"`` or ``"reference"``; None follows
            :func:`use_backend` / ``MSDA_OPS_BACKEND`` / ``"auto"``.

    Returns:
        (N, Lq, M * D), dtype of ``value``.

    Raises:
        TypeError / ValueError: inputs of the wrong dtype, rank, size or device.
        RuntimeError: ``backend="kernel"`` when the kernel for the device cannot be built.
    """
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    requested = _requested_backend(backend)
    if requested != "reference" and ops.kernel_available(value.device.type, requested == "kernel"):
        return torch.ops.msda_ops.ms_deform_attn_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return ms_deform_attn_reference(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
