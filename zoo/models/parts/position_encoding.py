"""Sine position encodings: of feature-map pixels and of boxes."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _sine_features(coords: Tensor, num_feats: int, temperature: float) -> Tensor:
    """(..., ) coordinates -> (..., num_feats) interleaved sin/cos features.

    Channel 2i is sin(x / T^(2i/F)) and channel 2i+1 is cos(x / T^(2i/F)), the layout of
    the official checkpoints.
    """
    dim_t = torch.arange(num_feats, dtype=coords.dtype, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    angles = coords[..., None] / dim_t
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


class SinePositionEncoding(nn.Module):
    """2-D sine encoding of a feature map, normalised to the real (unpadded) image area.

    Positions count real pixels only, so a padded image gets the encoding of the same
    image without padding. DETR uses ``offset=0``; Deformable DETR centres pixels with
    ``offset=-0.5``.
    """

    def __init__(
        self,
        num_feats: int = 128,
        temperature: float = 10000.0,
        offset: float = 0.0,
        scale: float = 2 * math.pi,
    ) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.offset = offset
        self.scale = scale

    def forward(self, padding_mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """(N, H, W) bool mask, True on padding -> (N, 2 * num_feats, H, W), y then x."""
        not_mask = (~padding_mask).to(dtype)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        eps = 1e-6
        y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + eps) * self.scale
        pos_y = _sine_features(y_embed, self.num_feats, self.temperature)
        pos_x = _sine_features(x_embed, self.num_feats, self.temperature)
        return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2)


def box_sine_encoding(
    boxes: Tensor, num_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> Tensor:
    """(N, Q, 4) boxes in [0, 1] -> (N, Q, 4 * num_feats), one sine block per coordinate.

    Two-stage Deformable DETR turns its proposals into query embeddings with this.
    """
    return _sine_features(boxes * scale, num_feats, temperature).flatten(-2)
