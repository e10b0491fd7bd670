"""Backbone stages to Deformable DETR's flattened multi-scale input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from msda_ops import level_start_index
from zoo.models.parts.backbone import downsample_mask
from zoo.models.parts.position_encoding import SinePositionEncoding


@dataclass
class FlatLevels:
    """Multi-scale features flattened into one sequence of length S = sum_l H_l * W_l.

    Attributes:
        src: (N, S, C) features.
        pos: (N, S, C) position encoding plus level embedding.
        padding_mask: (N, S) bool, True on padding.
        spatial_shapes: int64 (L, 2), rows (H_l, W_l).
        level_start_index: int64 (L,).
        valid_ratios: (N, L, 2) fraction (w, h) of each level that is real image.
        shapes: ``spatial_shapes`` as Python ints (no device sync to read them).
    """

    src: Tensor
    pos: Tensor
    padding_mask: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor
    shapes: list[tuple[int, int]]


def _projection(in_channels: int, hidden_dim: int, stride: int) -> nn.Sequential:
    # 1x1 for backbone stages; 3x3 stride 2 for the extra, coarser levels.
    kernel = 1 if stride == 1 else 3
    conv = nn.Conv2d(in_channels, hidden_dim, kernel, stride=stride, padding=kernel // 2)
    nn.init.xavier_uniform_(conv.weight, gain=1)
    nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
    return nn.Sequential(conv, nn.GroupNorm(32, hidden_dim))


def _shapes_tensor(maps: list[Tensor]) -> Tensor:
    """int64 (L, 2): the maps' last two sizes (H, W), kept symbolic by exporters.

    Built on the host and copied without blocking: a blocking copy (such as
    ``torch.tensor(..., device=...)``) would wait for the GPU to finish its queued work.
    """
    if torch.jit.is_tracing():
        # torch.onnx's TorchScript tracer records a Shape node here (it bakes torch.tensor).
        return torch.stack([torch._shape_as_tensor(m)[-2:].to(m.device) for m in maps])
    shapes = torch.tensor([tuple(m.shape[-2:]) for m in maps], dtype=torch.long)
    return shapes.to(maps[0].device, non_blocking=True)


def valid_ratios(padding_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(N, H, W) bool padding mask -> (N, 2) real fraction of the width and the height."""
    _, h, w = padding_mask.shape
    valid_h = (~padding_mask[:, :, 0]).sum(1).to(dtype) / h
    valid_w = (~padding_mask[:, 0, :]).sum(1).to(dtype) / w
    return torch.stack([valid_w, valid_h], -1)


class MultiScaleInput(nn.Module):
    """Projects backbone stages to ``hidden_dim`` (plus extra stride-2 levels) and flattens.

    Each level gets a GroupNorm(32) projection, a sine position encoding and a learned
    level embedding, so the encoder can tell levels apart.
    """

    def __init__(self, backbone_channels: Sequence[int], hidden_dim: int, num_levels: int) -> None:
        super().__init__()
        if len(backbone_channels) > num_levels:
            raise ValueError("more backbone stages than feature levels")
        projections = [_projection(c, hidden_dim, 1) for c in backbone_channels]
        in_channels = backbone_channels[-1]
        for _ in range(num_levels - len(backbone_channels)):
            projections.append(_projection(in_channels, hidden_dim, 2))
            in_channels = hidden_dim
        self.input_proj = nn.ModuleList(projections)
        self.level_embed = nn.Parameter(torch.empty(num_levels, hidden_dim))
        nn.init.normal_(self.level_embed)
        self.position_encoding = SinePositionEncoding(hidden_dim // 2, offset=-0.5)
        self.num_backbone_levels = len(backbone_channels)

    def forward(self, features: list[tuple[Tensor, Tensor]], padding_mask: Tensor) -> FlatLevels:
        """Flatten the levels.

        Args:
            features: backbone ``(features (N, C_l, H_l, W_l), mask (N, H_l, W_l))`` pairs.
            padding_mask: (N, H, W) bool of the input images, True on padding.
        """
        maps, masks = [], []
        for proj, (feat, mask) in zip(self.input_proj, features, strict=False):
            maps.append(proj(feat))
            masks.append(mask)
        source = features[-1][0]
        for proj in list(self.input_proj)[self.num_backbone_levels :]:
            source = proj(source)
            maps.append(source)
            masks.append(downsample_mask(padding_mask, source.shape[-2:]))
        dtype = maps[0].dtype
        # Sizes stay symbolic under torch.export and traced under torch.onnx (no int()),
        # so exported models keep a dynamic image size.
        shapes = [(m.shape[-2], m.shape[-1]) for m in maps]
        pos = [
            self.position_encoding(mask, dtype).flatten(2).transpose(1, 2)
            + self.level_embed[lvl].view(1, 1, -1)
            for lvl, mask in enumerate(masks)
        ]
        spatial_shapes = _shapes_tensor(maps)
        return FlatLevels(
            src=torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1),
            pos=torch.cat(pos, 1),
            padding_mask=torch.cat([m.flatten(1) for m in masks], 1),
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index(spatial_shapes),
            valid_ratios=torch.stack([valid_ratios(m, dtype) for m in masks], 1),
            shapes=shapes,
        )
