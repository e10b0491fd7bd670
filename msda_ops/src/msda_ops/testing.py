"""Random, valid inputs for :func:`msda_ops.ms_deform_attn` (tests, benchmarks, examples)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from msda_ops.functional import level_start_index

__all__ = ["level_start_index", "random_inputs"]


def random_inputs(
    batch: int,
    queries: int,
    heads: int,
    channels: int,
    shapes: Sequence[tuple[int, int]],
    points: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
    spread: float = 0.0,
    requires_grad: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The five arguments of ``ms_deform_attn`` for the given sizes.

    Args:
        batch, queries, heads, channels, points: N, Lq, M, D, P.
        shapes: the (H, W) of each level.
        spread: locations are uniform in [-spread, 1 + spread] (0: all inside the maps).
        requires_grad: on value, sampling_locations and attention_weights.

    Returns:
        value (N, S, M, D), spatial_shapes int64 (L, 2), level_start_index int64 (L,),
        sampling_locations (N, Lq, M, L, P, 2), attention_weights (N, Lq, M, L, P) that sum
        to 1 over L*P like the softmax in ``MSDeformAttn``.
    """
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(list(shapes), dtype=torch.int64).reshape(-1, 2)
    n_levels = spatial_shapes.shape[0]
    length = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    # Drawn in float64 on the CPU so every dtype and device sees the same numbers.
    value = torch.randn(batch, length, heads, channels, generator=gen, dtype=torch.float64)
    locations = torch.rand(
        batch, queries, heads, n_levels, points, 2, generator=gen, dtype=torch.float64
    )
    locations = locations * (1 + 2 * spread) - spread
    logits = torch.randn(
        batch, queries, heads, n_levels * points, generator=gen, dtype=torch.float64
    )
    weights = logits.softmax(-1).view(batch, queries, heads, n_levels, points)
    floats = [
        t.to(device=device, dtype=dtype).requires_grad_(requires_grad)
        for t in (value, locations, weights)
    ]
    spatial_shapes = spatial_shapes.to(device)
    return floats[0], spatial_shapes, level_start_index(spatial_shapes), floats[1], floats[2]
