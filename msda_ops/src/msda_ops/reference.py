"""Pure-PyTorch multi-scale deformable attention: the test oracle and the last fallback."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class _LocationGradRule(torch.autograd.Function):
    """Identity on the locations whose backward applies the op's rule for location gradients.

    A sample with a NaN coordinate or a non-finite attention weight gets NaN gradients for
    both coordinates (msda_ops/README.md, "NaN and infinities"). ``grid_sample``'s own
    answer there depends on its implementation (its vectorised CPU backward gives NaN for one
    coordinate and 0 for the other; inf times a derivative of 0 is NaN in one code path and
    0 in another), so the reference states the rule explicitly, as every kernel does.
    """

    @staticmethod
    def forward(ctx: Any, locations: Tensor, weights: Tensor) -> Tensor:
        undefined = locations.isnan().any(-1) | ~weights.isfinite()
        ctx.save_for_backward(undefined)
        return locations.view_as(locations)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (undefined,) = ctx.saved_tensors
        return grad.masked_fill(undefined[..., None], float("nan")), None


def ms_deform_attn_reference(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    *,
    softmax: bool = False,
) -> Tensor:
    """Multi-scale deformable attention with ``grid_sample`` (bilinear, zeros, align_corners=False).

    Args:
        value: (N, S, M, D) with S = sum_l H_l * W_l.
        spatial_shapes: int64 (L, 2), rows (H_l, W_l).
        level_start_index: int64 (L,), offset of each level in S (kept for API parity).
        sampling_locations: (N, Lq, M, L, P, 2) as (x, y) normalised to [0, 1].
        attention_weights: (N, Lq, M, L, P); logits when ``softmax``.
        softmax: normalise ``attention_weights`` with a softmax over the L*P samples of each
            (query, head) first (explicitly: this is the oracle of the fused kernels).

    Returns:
        (N, Lq, M * D), dtype of ``value``; mixed float dtypes (e.g. a float16 value with
        float32 locations under autocast) are computed in the widest of them.
    """
    del level_start_index  # the split below is derived from spatial_shapes
    out_dtype = value.dtype
    compute = torch.promote_types(value.dtype, sampling_locations.dtype)
    compute = torch.promote_types(compute, attention_weights.dtype)
    value = value.to(compute)
    sampling_locations = sampling_locations.to(compute)
    attention_weights = attention_weights.to(compute)
    if softmax:
        shape = attention_weights.shape
        attention_weights = attention_weights.flatten(3).softmax(-1).view(shape)
    if sampling_locations.requires_grad and torch.is_grad_enabled():
        sampling_locations = _LocationGradRule.apply(sampling_locations, attention_weights)
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_levels = value.split(sizes, dim=1)
    # grid_sample wants coordinates in [-1, 1]; align_corners=False maps x to x*W - 0.5.
    # Clamped to [-3, 3], which is outside every map (pixel x <= -1.5 or >= W + 0.5): an
    # infinite location then reads nothing, as a far-away one does, where grid_sample
    # itself would return NaN (inf * 0 in its weights). clamp keeps NaN, which propagates.
    grids = (2 * sampling_locations - 1).clamp(-3.0, 3.0)
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        v = value_levels[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, int(h), int(w))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N*M, D, Lq, P)
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels * n_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N*M, D, Lq)
    return out.view(n, m * d, lq).transpose(1, 2).contiguous().to(out_dtype)
