"""Box arithmetic shared by the models: logit-space refinement and scaling to pixels."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x) with x clamped to [eps, 1 - eps], so that boxes on the border stay finite."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


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


def scale_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """(N, K, 4) normalised cxcywh -> xyxy in pixels; ``sizes`` (N, 2) holds (H, W)."""
    h, w = sizes.unbind(-1)
    scale = torch.stack([w, h, w, h], dim=-1).to(boxes.dtype)
    return box_convert(boxes, "cxcywh", "xyxy") * scale[:, None, :]
