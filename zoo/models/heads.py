"""Prediction heads shared by DETR and Deformable DETR."""

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


def box_head(hidden_dim: int) -> MLP:
    """The 3-layer MLP that predicts (cx, cy, w, h) before the sigmoid."""
    return MLP(hidden_dim, hidden_dim, 4, 3)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x) with x clamped to [eps, 1 - eps], so that boxes on the border stay finite."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


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


def refine_boxes(delta: Tensor, reference: Tensor) -> Tensor:
    """Apply a box head's output (N, Q, 4) to a reference (N, Q, 2|4) -> boxes (N, Q, 4).

    The head predicts in logit space: a 4-d reference is shifted as a whole; a 2-d
    reference point shifts the centre only, the size is predicted outright.
    """
    if reference.shape[-1] == 4:
        return (delta + inverse_sigmoid(reference)).sigmoid()
    if reference.shape[-1] == 2:
        centre = delta[..., :2] + inverse_sigmoid(reference)
        return torch.cat([centre, delta[..., 2:]], -1).sigmoid()
    raise ValueError(f"reference must end in 2 or 4 values, got shape {tuple(reference.shape)}")
