"""The Triton backend as custom ops: ``torch.ops.msda_triton.ms_deform_attn_{forward,backward}``.

Schemas (``softmax``: ``attention_weights`` are logits, normalised over L*P in the kernel)::

    msda_triton::ms_deform_attn_forward(value, spatial_shapes, level_start_index,
                                        sampling_locations, attention_weights, softmax) -> out
    msda_triton::ms_deform_attn_backward(grad_output, value, spatial_shapes, level_start_index,
                                         sampling_locations, attention_weights, softmax)
        -> (grad_value, grad_sampling_locations, grad_attention_weights)

They are opaque custom ops (``torch.library.custom_op``) with fake-tensor and autograd
registrations, so ``torch.compile(fullgraph=True)`` and ``torch.export`` keep them in the
graph on any backend, including the CPU interpreter used by the tests (``triton_op``
would let Inductor trace into the kernels, but its fake implementation launches the
kernel, which the interpreter cannot do on fake tensors).

Importing this module imports Triton; :mod:`msda_ops.functional` imports it only when the
backend is used. Under ``TRITON_INTERPRET=1`` (set before Triton is first imported) the
kernels run in Triton's CPU interpreter and accept CPU tensors: that is how the tests
check them on machines without a GPU.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import triton
from torch import Tensor

from msda_ops import triton_kernels
from msda_ops.ops import register_python_side
from msda_ops.triton_tuning import Config, choose, launch_shape, tuning_enabled

FORWARD = "msda_triton::ms_deform_attn_forward"
BACKWARD = "msda_triton::ms_deform_attn_backward"


def interpreted() -> bool:
    """Whether the kernels run in Triton's CPU interpreter rather than compiled."""
    from triton.runtime.jit import JITFunction

    return not isinstance(triton_kernels.msda_forward_kernel, JITFunction)


def _common_args(
    value: Tensor, shapes: Tensor, starts: Tensor, loc: Tensor, weights: Tensor, config: Config
) -> tuple[list[Any], dict[str, int], int]:
    """Sizes and strides shared by both kernels, the launch shape and the grid size."""
    n, length, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = loc.shape
    meta = launch_shape(lq, n_levels * n_points, d, config)
    q_blocks = triton.cdiv(lq, meta["BLOCK_Q"])
    sizes = [lq, m, d, n_levels, n_points, q_blocks, length]
    strides = [*shapes.stride(), *starts.stride(), *loc.stride(), *weights.stride()]
    return [*sizes, *value.stride(), *strides], meta, n * m * q_blocks


def _tuning_key(kind: str, value: Tensor, loc: Tensor, softmax: bool) -> tuple[Any, ...]:
    return (kind, loc.shape[3] * loc.shape[4], value.shape[3], value.dtype, softmax, value.device)


def _launch_forward(
    value: Tensor,
    shapes: Tensor,
    starts: Tensor,
    loc: Tensor,
    weights: Tensor,
    softmax: bool,
    config: Config | None = None,
) -> Tensor:
    """The forward kernel; ``config`` None: the tuned (or default) launch shape."""
    n, _, m, d = value.shape
    out = value.new_empty((n, loc.shape[1], m * d))
    if out.numel() == 0:
        return out
    if loc.shape[3] * loc.shape[4] == 0:  # no samples: an empty sum, as in the reference
        return out.zero_()
    if config is None:
        config = choose(
            _tuning_key("forward", value, loc, softmax),
            lambda c: _launch_forward(value, shapes, starts, loc, weights, softmax, c),
            tuning_enabled(value.device, interpreted()),
        )
    (lq, m_, d_, n_levels, n_points, q_blocks, length, *strides), meta, programs = _common_args(
        value, shapes, starts, loc, weights, config
    )
    triton_kernels.msda_forward_kernel[(programs,)](
        value, shapes, starts, loc, weights, out,
        lq, m_, d_, n_levels, n_points, q_blocks, length,
        *strides, *out.stride(),
        SOFTMAX=softmax, **meta,
    )  # fmt: skip
    return out


def _alert_not_deterministic() -> None:
    """What torch's own atomic backwards do under ``torch.use_deterministic_algorithms``."""
    message = (
        "ms_deform_attn: the triton backward sums the value gradient with float atomics and "
        "is not deterministic; use backend='kernel' or 'reference' under "
        "torch.use_deterministic_algorithms(True)"
    )
    if torch.is_deterministic_algorithms_warn_only_enabled():
        warnings.warn(message, UserWarning, stacklevel=3)
    else:
        raise RuntimeError(message)


def _launch_backward(
    grad_output: Tensor,
    value: Tensor,
    shapes: Tensor,
    starts: Tensor,
    loc: Tensor,
    weights: Tensor,
    softmax: bool,
    config: Config | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The backward kernel; ``config`` None: the tuned (or default) launch shape."""
    # grad_value is summed from many samples with atomics: float32 whatever value's dtype.
    grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
    grad_loc = torch.empty_like(loc, memory_format=torch.contiguous_format)
    grad_w = torch.empty_like(weights, memory_format=torch.contiguous_format)
    if grad_loc.numel() > 0:
        # The atomics make the order of the sums, hence their last bits, vary between runs.
        if torch.are_deterministic_algorithms_enabled():
            _alert_not_deterministic()
        if config is None:
            args = (grad_output, value, shapes, starts, loc, weights, softmax)
            config = choose(
                _tuning_key("backward", value, loc, softmax),
                lambda c: _launch_backward(*args, c),  # into scratch gradients
                tuning_enabled(value.device, interpreted()),
            )
        (lq, m, d, n_levels, n_points, q_blocks, length, *strides), meta, programs = _common_args(
            value, shapes, starts, loc, weights, config
        )
        value_strides, other_strides = strides[:4], strides[4:]
        triton_kernels.msda_backward_kernel[(programs,)](
            grad_output, value, shapes, starts, loc, weights, grad_value, grad_loc, grad_w,
            lq, m, d, n_levels, n_points, q_blocks, length,
            *grad_output.stride(), *value_strides, *grad_value.stride()[:3], *other_strides,
            SOFTMAX=softmax, **meta,
        )  # fmt: skip
    return grad_value.to(value.dtype), grad_loc, grad_w


@torch.library.custom_op(FORWARD, mutates_args=())
def ms_deform_attn_forward(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    softmax: bool,
) -> Tensor:
    """(N, Lq, M*D) in value's dtype; see :func:`msda_ops.ms_deform_attn` (which validates)."""
    return _launch_forward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, softmax
    )


@torch.library.custom_op(BACKWARD, mutates_args=())
def ms_deform_attn_backward(
    grad_output: Tensor,
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    softmax: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of value, sampling_locations and attention_weights (the logits when
    ``softmax``), each fresh, contiguous and in its input's dtype."""
    n, _, m, d = value.shape
    expected = (n, sampling_locations.shape[1], m * d)
    if tuple(grad_output.shape) != expected:
        raise ValueError(
            f"ms_deform_attn: grad_output has shape {tuple(grad_output.shape)}, expected {expected}"
        )
    return _launch_backward(
        grad_output,
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        softmax,
    )


# Shapes for fake tensors and autograd exactly as for the compiled kernels' ops.
register_python_side(FORWARD, BACKWARD, "triton")
