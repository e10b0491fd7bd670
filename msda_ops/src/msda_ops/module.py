"""``MSDeformAttn``: Deformable DETR's multi-scale deformable attention layer.

Parameter names and initialisation follow the original (fundamentalvision/Deformable-DETR,
``models/ops/modules/ms_deform_attn.py``), so its checkpoints and transformers'
``DeformableDetrMultiscaleDeformableAttention`` weights load unchanged.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msda_ops.functional import ms_deform_attn


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: each query attends to ``n_points`` learned
    locations around its reference point on each of ``n_levels`` feature maps, per head.

    Args:
        d_model: hidden size C; must be divisible by ``n_heads``.
        n_levels: number of feature levels L.
        n_heads: number of attention heads M.
        n_points: sampling points P per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        _check_layer_args(d_model=d_model, n_levels=n_levels, n_heads=n_heads, n_points=n_points)
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Initial offsets point outwards in n_heads directions (one per head), the p-th point
        # (p + 1) times as far, so every head starts by looking somewhere different.
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid *= torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    @overload
    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
        return_sampling: Literal[False] = False,
    ) -> Tensor: ...

    @overload
    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
        *,
        return_sampling: Literal[True],
    ) -> tuple[Tensor, Tensor, Tensor]: ...

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
        return_sampling: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Attend from ``query`` to the flattened multi-scale feature maps.

        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, L, 2) as normalised (x, y), or (N, Lq, L, 4) as
                normalised boxes (cx, cy, w, h); values in [0, 1], top-left (0, 0).
            input_flatten: (N, S, C), the L levels flattened and concatenated,
                S = sum_l H_l * W_l.
            input_spatial_shapes: int64 (L, 2), rows (H_l, W_l).
            input_level_start_index: int64 (L,), offset of each level in S.
            input_padding_mask: bool (N, S), True at padding positions (their value is
                zeroed), or None.
            return_sampling: also return where and how strongly each head sampled.

        Returns:
            (N, Lq, C); with ``return_sampling=True`` the tuple ``(output,
            sampling_locations (N, Lq, M, L, P, 2) as normalised (x, y),
            attention_weights (N, Lq, M, L, P) summing to 1 over L*P)``.
        """
        _check_forward_inputs(
            self, query, reference_points, input_flatten, input_spatial_shapes,
            input_level_start_index, input_padding_mask,
        )  # fmt: skip
        n, len_q, _ = query.shape
        _, len_in, _ = input_flatten.shape
        m, n_levels, n_points = self.n_heads, self.n_levels, self.n_points

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, len_in, m, self.d_model // m)

        offsets = self.sampling_offsets(query).view(n, len_q, m, n_levels, n_points, 2)
        # Logits: the op applies the softmax over the L*P samples itself (softmax=True).
        logits = self.attention_weights(query).view(n, len_q, m, n_levels, n_points)

        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: divide by (W, H) to normalise.
            normalizer = torch.stack(
                [input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1
            )
            locations = (
                reference_points[:, :, None, :, None, :]
                + offsets / normalizer[None, None, None, :, None, :]
            )
        elif reference_points.shape[-1] == 4:
            # Offsets are relative to the box: P points span up to half its size.
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(
                "reference_points must have 2 (x, y) or 4 (cx, cy, w, h) values in its last "
                f"dimension, got shape {tuple(reference_points.shape)}"
            )
        output = ms_deform_attn(
            value, input_spatial_shapes, input_level_start_index, locations, logits, softmax=True
        )
        output = self.output_proj(output)
        if return_sampling:
            weights = F.softmax(logits.flatten(3), -1).view_as(logits)
            return output, locations, weights
        return output

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
            f"n_points={self.n_points}"
        )


def _check_layer_args(**sizes: int) -> None:
    """Raise ``ValueError`` unless every size is a positive int and d_model % n_heads == 0."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if sizes["d_model"] % sizes["n_heads"] != 0:
        raise ValueError(
            f"d_model must be divisible by n_heads, got {sizes['d_model']} and {sizes['n_heads']}"
        )


def _check_forward_inputs(
    layer: MSDeformAttn,
    query: Tensor,
    reference_points: Tensor,
    input_flatten: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    padding_mask: Tensor | None,
) -> None:
    """Shapes of ``forward``'s inputs against the layer's sizes, named in the message
    (the op itself checks the values: the level sizes against S, dtypes, devices)."""
    c, levels = layer.d_model, layer.n_levels
    for name, t in (("query", query), ("input_flatten", input_flatten)):
        if t.dim() != 3 or t.shape[-1] != c:
            raise ValueError(f"{name} must be (N, L, d_model={c}), got shape {tuple(t.shape)}")
    if query.shape[0] != input_flatten.shape[0]:
        raise ValueError(
            f"query and input_flatten must have the same batch size, got {query.shape[0]} "
            f"and {input_flatten.shape[0]}"
        )
    if tuple(spatial_shapes.shape) != (levels, 2):
        raise ValueError(
            f"input_spatial_shapes must be (n_levels={levels}, 2), got shape "
            f"{tuple(spatial_shapes.shape)}"
        )
    if tuple(level_start_index.shape) != (levels,):
        raise ValueError(
            f"input_level_start_index must be (n_levels={levels},), got shape "
            f"{tuple(level_start_index.shape)}"
        )
    n, len_q = query.shape[:2]
    if reference_points.dim() != 4 or tuple(reference_points.shape[:3]) != (n, len_q, levels):
        raise ValueError(
            f"reference_points must be (N={n}, Lq={len_q}, n_levels={levels}, 2 or 4), got "
            f"shape {tuple(reference_points.shape)}"
        )
    if padding_mask is not None and tuple(padding_mask.shape) != tuple(input_flatten.shape[:2]):
        raise ValueError(
            f"input_padding_mask must be (N, S) = {tuple(input_flatten.shape[:2])}, got shape "
            f"{tuple(padding_mask.shape)}"
        )
