"""The MLPs of DETR and Deformable DETR: the box head and the transformer's feed-forward block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (the box head is a 3-layer MLP)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        """(..., input_dim) -> (..., output_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class FeedForward(nn.Module):
    """Residual two-layer ReLU MLP followed by LayerNorm (post-norm): every transformer
    layer of both families ends with one."""

    def __init__(self, hidden_dim: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(hidden_dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout_out = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(N, L, C) -> (N, L, C)."""
        y = self.linear2(self.dropout(torch.relu(self.linear1(x))))
        return self.norm(x + self.dropout_out(y))


def box_head(hidden_dim: int) -> MLP:
    """The 3-layer MLP that predicts (cx, cy, w, h) before the sigmoid."""
    return MLP(hidden_dim, hidden_dim, 4, 3)


def init_focal_class_head(layer: nn.Linear, prior_prob: float = 0.01) -> None:
    """Bias every class towards ``prior_prob`` (RetinaNet), as Deformable DETR does."""
    nn.init.constant_(layer.bias, -math.log((1 - prior_prob) / prior_prob))


def init_box_head(head: MLP, size_bias: float) -> None:
    """Zero the last layer so the first prediction is the reference; set the w/h bias."""
    last = head.layers[-1]
    assert isinstance(last, nn.Linear)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    nn.init.constant_(last.bias[2:], size_bias)
