"""Deformable DETR's encoder and decoder; every deformable attention is ``msda_ops.MSDeformAttn``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from msda_ops import MSDeformAttn
from zoo.models.deformable.multiscale import FlatLevels
from zoo.models.parts.box_ops import refine_boxes
from zoo.models.parts.heads import FeedForward


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then the feed-forward block."""

    def __init__(
        self, hidden_dim: int, nheads: int, ffn_dim: int, dropout: float, levels: int, points: int
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(hidden_dim, levels, nheads, points)
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.ffn = FeedForward(hidden_dim, ffn_dim, dropout)

    def forward(self, src: Tensor, reference_points: Tensor, levels: FlatLevels) -> Tensor:
        """src (N, S, C); reference_points (N, S, L, 2) -> (N, S, C)."""
        out = self.self_attn(
            src + levels.pos,
            reference_points,
            src,
            levels.spatial_shapes,
            levels.level_start_index,
            levels.padding_mask,
        )
        return self.ffn(self.norm1(src + self.dropout(out)))


class _LayerStack(nn.Module):
    """``num_layers`` independent layers of type ``layer_type``, all of the same sizes."""

    layer_type: type[nn.Module]

    def __init__(
        self,
        num_layers: int,
        hidden_dim: int,
        nheads: int,
        ffn_dim: int,
        dropout: float,
        levels: int,
        points: int,
    ) -> None:
        super().__init__()
        sizes = (hidden_dim, nheads, ffn_dim, dropout, levels, points)
        self.layers = nn.ModuleList(self.layer_type(*sizes) for _ in range(num_layers))


class DeformableEncoder(_LayerStack):
    """A stack of deformable encoder layers; every pixel queries around its own centre."""

    layer_type = DeformableEncoderLayer

    @staticmethod
    def reference_points(levels: FlatLevels) -> Tensor:
        """(N, S, L, 2): each pixel's centre, in the normalised frame of every level.

        Centres are normalised by the real (unpadded) extent of their own level, then
        scaled into each level's padded frame by its valid ratio.
        """
        vr = levels.valid_ratios
        dtype, device = vr.dtype, vr.device
        refs = []
        for lvl, (h, w) in enumerate(levels.shapes):
            # arange + 0.5 equals linspace(0.5, h - 0.5, h) exactly and keeps h symbolic
            # under torch.export (linspace specialises it).
            ys = torch.arange(h, dtype=dtype, device=device) + 0.5
            xs = torch.arange(w, dtype=dtype, device=device) + 0.5
            ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
            ref_y = ref_y.reshape(-1)[None] / (vr[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (vr[:, None, lvl, 0] * w)
            refs.append(torch.stack((ref_x, ref_y), -1))
        return torch.cat(refs, 1)[:, :, None] * vr[:, None]

    def forward(self, levels: FlatLevels) -> Tensor:
        """Encode ``levels.src`` -> memory (N, S, C)."""
        reference_points = self.reference_points(levels)
        out = levels.src
        for layer in self.layers:
            out = layer(out, reference_points, levels)
        return out


class DeformableDecoderLayer(nn.Module):
    """Self-attention among queries, deformable cross-attention, then feed-forward."""

    def __init__(
        self, hidden_dim: int, nheads: int, ffn_dim: int, dropout: float, levels: int, points: int
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(
            hidden_dim, nheads, dropout=dropout, batch_first=True
        )
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.cross_attn = MSDeformAttn(hidden_dim, levels, nheads, points)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.ffn = FeedForward(hidden_dim, ffn_dim, dropout)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        memory: Tensor,
        levels: FlatLevels,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One decoder step.

        Args:
            tgt, query_pos: (N, Q, C).
            reference_points: (N, Q, L, 2|4) in each level's padded frame.
            memory: (N, S, C) encoder output.

        Returns:
            ``tgt`` (N, Q, C), the cross-attention's sampling locations
            (N, Q, M, L, P, 2) and attention weights (N, Q, M, L, P).
        """
        q = k = tgt + query_pos
        out = self.self_attn(q, k, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(out))
        out, locations, weights = self.cross_attn(
            tgt + query_pos,
            reference_points,
            memory,
            levels.spatial_shapes,
            levels.level_start_index,
            levels.padding_mask,
            return_sampling=True,
        )
        tgt = self.norm2(tgt + self.dropout2(out))
        return self.ffn(tgt), locations, weights


@dataclass
class DecoderOutput:
    """``states`` (L_dec, N, Q, C); ``references`` (L_dec, N, Q, 2|4): the reference each
    layer started from (layer 0: the initial one); sampling per layer when requested."""

    states: Tensor
    references: list[Tensor]
    sampling_locations: list[Tensor]
    attention_weights: list[Tensor]


class DeformableDecoder(_LayerStack):
    """A stack of deformable decoder layers, optionally refining its reference boxes."""

    layer_type = DeformableDecoderLayer

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        memory: Tensor,
        levels: FlatLevels,
        refine_heads: Sequence[nn.Module] | None = None,
        output_sampling: bool = False,
    ) -> DecoderOutput:
        """Decode ``Q`` queries.

        Args:
            tgt, query_pos: (N, Q, C) query content and position.
            reference_points: (N, Q, 2) points or (N, Q, 4) boxes, normalised to the
                real image area.
            memory: (N, S, C) encoder output.
            refine_heads: one box head per layer; when given, each layer moves the
                reference to the box it predicts (detached, as the official code).
            output_sampling: keep every layer's sampling locations and weights.
        """
        vr = levels.valid_ratios
        references, locations, weights, states = [], [], [], []
        for i, layer in enumerate(self.layers):
            references.append(reference_points)
            # Reference points live in the real image area; sampling works in the
            # padded frame of each level, hence the scaling by the valid ratios.
            scale = vr if reference_points.shape[-1] == 2 else torch.cat([vr, vr], -1)
            tgt, loc, w = layer(
                tgt, query_pos, reference_points[:, :, None] * scale[:, None], memory, levels
            )
            states.append(tgt)
            if output_sampling:
                locations.append(loc)
                weights.append(w)
            if refine_heads is not None:
                reference_points = refine_boxes(refine_heads[i](tgt), reference_points).detach()
        return DecoderOutput(torch.stack(states), references, locations, weights)
