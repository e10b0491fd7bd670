"""Argument validation for :func:`msda_ops.ms_deform_attn`, in one place.

Every error names the argument and the shape it expected. Shape, dtype and device checks
read only metadata. The checks on the *contents* of ``spatial_shapes`` and
``level_start_index`` (positive sizes, sum equal to S, consistent start offsets) need
their values: on CPU they are read directly (a few integers); on an accelerator they are
queued as asynchronous device asserts, so no call waits on the device. Under
``torch.compile``/``torch.export`` tracing the contents are unknown and those checks are
skipped; the kernels never read outside ``value`` whatever the contents are.
"""

from __future__ import annotations

import torch
from torch import Tensor

_SHAPES = {
    "value": "(N, S, M, D)",
    "spatial_shapes": "(L, 2)",
    "level_start_index": "(L,)",
    "sampling_locations": "(N, Lq, M, L, P, 2)",
    "attention_weights": "(N, Lq, M, L, P)",
}


def _fail(name: str, problem: str) -> ValueError:
    return ValueError(f"ms_deform_attn: {name} {problem}; expected {name} of shape {_SHAPES[name]}")


def _require_rank(name: str, t: Tensor, rank: int) -> None:
    if t.dim() != rank:
        raise _fail(name, f"has {t.dim()} dimensions (shape {tuple(t.shape)})")


def _require_dim(name: str, t: Tensor, dim: int, size: int, what: str) -> None:
    if t.shape[dim] != size:
        raise _fail(name, f"has size {t.shape[dim]} in dimension {dim}, but {what} is {size}")


def check_inputs(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> None:
    """Raise TypeError/ValueError unless the five tensors form a valid call.

    Shapes: value (N, S, M, D), spatial_shapes int (L, 2) as (H, W), level_start_index
    int (L,), sampling_locations (N, Lq, M, L, P, 2), attention_weights (N, Lq, M, L, P).
    """
    args = {
        "value": value,
        "spatial_shapes": spatial_shapes,
        "level_start_index": level_start_index,
        "sampling_locations": sampling_locations,
        "attention_weights": attention_weights,
    }
    for name, t in args.items():
        if not isinstance(t, Tensor):
            raise TypeError(
                f"ms_deform_attn: {name} must be a torch.Tensor, got {type(t).__name__}"
            )
    for name in ("value", "sampling_locations", "attention_weights"):
        if not args[name].is_floating_point():
            raise TypeError(
                f"ms_deform_attn: {name} must have a floating-point dtype, got {args[name].dtype}"
            )
    for name in ("spatial_shapes", "level_start_index"):
        if args[name].dtype not in (torch.int64, torch.int32):
            raise TypeError(
                f"ms_deform_attn: {name} must have dtype torch.int64 (or int32), got {args[name].dtype}"
            )
    devices = {name: t.device for name, t in args.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"ms_deform_attn: all inputs must be on one device, got {listing}")

    _require_rank("value", value, 4)
    _require_rank("spatial_shapes", spatial_shapes, 2)
    _require_rank("level_start_index", level_start_index, 1)
    _require_rank("sampling_locations", sampling_locations, 6)
    _require_rank("attention_weights", attention_weights, 5)

    n, _, m, d = value.shape
    n_levels = spatial_shapes.shape[0]
    if spatial_shapes.shape[1] != 2:
        raise _fail("spatial_shapes", f"has {spatial_shapes.shape[1]} columns, not 2 (H, W)")
    if n_levels == 0:
        raise _fail("spatial_shapes", "has no levels")
    if d == 0:
        raise _fail("value", "has D = 0 channels per head")
    _require_dim("level_start_index", level_start_index, 0, n_levels, "L from spatial_shapes")
    loc = sampling_locations
    _require_dim("sampling_locations", loc, 0, n, "N from value")
    _require_dim("sampling_locations", loc, 2, m, "M from value")
    _require_dim("sampling_locations", loc, 3, n_levels, "L from spatial_shapes")
    if loc.shape[5] != 2:
        raise _fail("sampling_locations", f"has {loc.shape[5]} coordinates, not 2 (x, y)")
    lq, n_points = loc.shape[1], loc.shape[4]
    expected = (n, lq, m, n_levels, n_points)
    if tuple(attention_weights.shape) != expected:
        raise _fail(
            "attention_weights",
            f"has shape {tuple(attention_weights.shape)}, but the other inputs give {expected}",
        )
    _check_level_contents(spatial_shapes, level_start_index, value.shape[1])


def _check_level_contents(spatial_shapes: Tensor, level_start_index: Tensor, length: int) -> None:
    """H, W > 0, sum of H*W == S, and level_start_index == exclusive cumsum of H*W."""
    if torch.compiler.is_compiling() or spatial_shapes.device.type == "meta":
        return
    if spatial_shapes.device.type != "cpu":
        _queue_device_asserts(spatial_shapes, level_start_index, length)
        return
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    for lvl, (h, w) in enumerate(shapes):
        if h <= 0 or w <= 0:
            raise _fail(
                "spatial_shapes", f"has a non-positive size (H, W) = ({h}, {w}) at level {lvl}"
            )
    sizes = [h * w for h, w in shapes]
    if sum(sizes) != length:
        raise ValueError(
            f"ms_deform_attn: spatial_shapes gives sum(H*W) = {sum(sizes)}, but value has "
            f"S = {length}; expected value of shape {_SHAPES['value']} with S = sum(H*W)"
        )
    starts = [sum(sizes[:lvl]) for lvl in range(len(sizes))]
    got = [int(s) for s in level_start_index.tolist()]
    if got != starts:
        raise ValueError(
            f"ms_deform_attn: level_start_index is {got}, but spatial_shapes gives {starts}; "
            f"expected level_start_index of shape {_SHAPES['level_start_index']} holding the "
            "exclusive cumulative sum of H*W"
        )


def _queue_device_asserts(spatial_shapes: Tensor, level_start_index: Tensor, length: int) -> None:
    """The checks of _check_level_contents as one device assert: it fails at the next sync."""
    sizes = spatial_shapes[:, 0].long() * spatial_shapes[:, 1].long()
    ok = (spatial_shapes > 0).all() & (sizes.sum() == length)
    ok &= (level_start_index.long() == sizes.cumsum(0) - sizes).all()
    torch._assert_async(
        ok,
        "ms_deform_attn: spatial_shapes must be positive and sum to value.shape[1], and "
        "level_start_index must be the exclusive cumulative sum of H*W",
    )
