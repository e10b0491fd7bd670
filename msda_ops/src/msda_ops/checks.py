"""Argument validation for :func:`msda_ops.ms_deform_attn`: the one layer that checks a call.

The public entry calls :func:`check_inputs` once; the backends behind it (the compiled
kernels, Triton, the reference) trust what it let through. Every error names the argument
and what was expected.

What is checked, and when:

- shapes, dtypes, devices, ``softmax``: from the tensors' metadata, on every call (no
  device work);
- the *contents* of ``spatial_shapes`` and ``level_start_index`` (sizes > 0, sum of H*W
  equal to S, start offsets the exclusive cumulative sum of H*W):

  - CPU tensors: read on the host, every call (a few integers), ``ValueError`` on failure;
  - accelerator tensors: one asynchronous device assert (no synchronisation), queued the
    first time a given pair of tensor objects is seen with this S and not again while
    neither is modified in place (their version counters are part of the key); a new
    tensor, even at a reused address, is checked again. ``MSDA_OPS_CHECK_LEVELS=1``
    copies them to the host and checks them on every call instead (it synchronises, and
    raises the same ``ValueError`` as on CPU): a debugging aid;
  - under ``torch.compile``/``torch.export`` tracing, or on the ``meta`` device, the
    contents are unknown and not checked.

  Whatever the contents, no backend reads outside ``value``: the kernels validate each
  level against S once per call and skip a level that does not fit.
"""

from __future__ import annotations

import os
import weakref

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int64, torch.int32)
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_SHAPES = {
    "value": "(N, S, M, D)",
    "spatial_shapes": "(L, 2)",
    "level_start_index": "(L,)",
    "sampling_locations": "(N, Lq, M, L, P, 2)",
    "attention_weights": "(N, Lq, M, L, P)",
}
# spatial_shapes object -> (its version, level_start_index, its version, S) last checked.
_checked_levels: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _fail(name: str, problem: str) -> ValueError:
    return ValueError(f"ms_deform_attn: {name} {problem}; expected {name} of shape {_SHAPES[name]}")


def _require_rank(name: str, t: Tensor, rank: int) -> None:
    if t.dim() != rank:
        raise _fail(name, f"has {t.dim()} dimensions (shape {tuple(t.shape)})")


def _require_dim(name: str, t: Tensor, dim: int, size: int, what: str) -> None:
    if t.shape[dim] != size:
        raise _fail(name, f"has size {t.shape[dim]} in dimension {dim}, but {what} is {size}")


def _check_types(args: dict[str, Tensor], softmax: object) -> None:
    for name, t in args.items():
        if not isinstance(t, Tensor):
            raise TypeError(
                f"ms_deform_attn: {name} must be a torch.Tensor, got {type(t).__name__}"
            )
    for name in ("value", "sampling_locations", "attention_weights"):
        dtype = args[name].dtype
        if not dtype.is_floating_point:
            raise TypeError(
                f"ms_deform_attn: {name} must have a floating-point dtype (float64, float32, "
                f"float16 or bfloat16), got {dtype}"
            )
        if dtype not in FLOAT_DTYPES:  # float8 and other storage-only formats
            raise TypeError(
                f"ms_deform_attn: {name} must be float64, float32, float16 or bfloat16, got "
                f"{dtype}; convert it first, e.g. {name}.to(torch.bfloat16)"
            )
    for name in ("spatial_shapes", "level_start_index"):
        if args[name].dtype not in INDEX_DTYPES:
            raise TypeError(
                f"ms_deform_attn: {name} must have dtype torch.int64 (or int32), got {args[name].dtype}"
            )
    if not isinstance(softmax, bool):
        raise TypeError(f"ms_deform_attn: softmax must be True or False, got {softmax!r}")


def check_inputs(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    softmax: object = False,
) -> None:
    """Raise TypeError/ValueError unless the arguments form a valid call.

    Shapes: value (N, S, M, D), spatial_shapes int (L, 2) as (H, W), level_start_index
    int (L,), sampling_locations (N, Lq, M, L, P, 2), attention_weights (N, Lq, M, L, P);
    ``softmax`` a bool. N, Lq, M and P may be 0; D and L may not.
    """
    args = {
        "value": value,
        "spatial_shapes": spatial_shapes,
        "level_start_index": level_start_index,
        "sampling_locations": sampling_locations,
        "attention_weights": attention_weights,
    }
    _check_types(args, softmax)
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


def check_triton_inputs(
    value: Tensor, sampling_locations: Tensor, attention_weights: Tensor, interpreted: bool
) -> None:
    """What the Triton backend adds to :func:`check_inputs`: its dtypes and devices.

    ``interpreted``: the kernels run in Triton's CPU interpreter (then CPU tensors work).
    """
    tensors = (value, sampling_locations, attention_weights)
    for name, t in zip(("value", "sampling_locations", "attention_weights"), tensors, strict=True):
        if t.dtype not in TRITON_DTYPES:
            raise TypeError(
                f"ms_deform_attn: the triton backend computes in float32 and takes float32, "
                f"float16 or bfloat16 inputs, got {name} of dtype {t.dtype}; use "
                "backend='kernel' or backend='reference' for this dtype"
            )
    device = value.device
    if device.type != "cuda" and not (device.type == "cpu" and interpreted):
        raise RuntimeError(
            f"ms_deform_attn: the triton backend runs on CUDA tensors, got {device}; CPU "
            "tensors run only in Triton's interpreter (TRITON_INTERPRET=1 set before triton is "
            "first imported, for testing); use backend='kernel' or 'reference'"
        )


def _check_level_contents(spatial_shapes: Tensor, level_start_index: Tensor, length: int) -> None:
    """H, W > 0, sum of H*W == S, level_start_index == exclusive cumsum of H*W (see above)."""
    if torch.compiler.is_compiling() or spatial_shapes.device.type == "meta":
        return
    if _on_host(spatial_shapes):
        check_level_values(spatial_shapes, level_start_index, length)
    else:
        check_levels_on_device(spatial_shapes, level_start_index, length)


def _on_host(t: Tensor) -> bool:
    return t.device.type == "cpu"


def check_levels_on_device(spatial_shapes: Tensor, level_start_index: Tensor, length: int) -> None:
    """The content checks for accelerator tensors: once per tensor pair, or every call in debug."""
    if os.environ.get("MSDA_OPS_CHECK_LEVELS") == "1":
        check_level_values(spatial_shapes.cpu(), level_start_index.cpu(), length)
        return
    seen = _checked_levels.get(spatial_shapes)
    key = (spatial_shapes._version, level_start_index._version, length)
    if seen is not None and seen[0]() is level_start_index and seen[1:] == key:
        return
    _queue_device_asserts(spatial_shapes, level_start_index, length)
    _checked_levels[spatial_shapes] = (weakref.ref(level_start_index), *key)


def check_level_values(spatial_shapes: Tensor, level_start_index: Tensor, length: int) -> None:
    """The content checks on host tensors: raise ValueError naming the argument at fault."""
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
    """The content checks as one device assert: it fails at the next synchronisation."""
    sizes = spatial_shapes[:, 0].long() * spatial_shapes[:, 1].long()
    ok = (spatial_shapes > 0).all() & (sizes.sum() == length)
    ok &= (level_start_index.long() == sizes.cumsum(0) - sizes).all()
    torch._assert_async(
        ok,
        "ms_deform_attn: spatial_shapes must be positive and sum to value.shape[1], and "
        "level_start_index must be the exclusive cumulative sum of H*W",
    )
