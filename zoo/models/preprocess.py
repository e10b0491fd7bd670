"""Images to a padded, normalised batch, as the official evaluation pipeline prepares them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

ImageInput = Any  # a (3, H, W) float tensor in [0, 1], or a PIL image


@dataclass
class Batch:
    """``pixel_values`` (N, 3, H, W), ``pixel_mask`` (N, H, W) True on real pixels,
    ``original_sizes`` (N, 2) each input's (H, W) before resizing."""

    pixel_values: Tensor
    pixel_mask: Tensor
    original_sizes: Tensor


def resized_size(height: int, width: int, shortest_edge: int, longest_edge: int) -> tuple[int, int]:
    """(H, W) with the shorter side at ``shortest_edge``, shrunk so the longer fits ``longest_edge``."""
    short, long = min(height, width), max(height, width)
    target = shortest_edge
    if long / short * target > longest_edge:
        target = round(longest_edge * short / long)
    if short == target:
        return height, width
    # int() truncates like the official transform, so sizes match its evaluation exactly.
    if width < height:
        return int(target * height / width), target
    return target, int(target * width / height)


def to_tensor(image: ImageInput) -> Tensor:
    """A (3, H, W) float tensor in [0, 1] from a tensor or a PIL image."""
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
        return image if image.is_floating_point() else image.float() / 255
    return TF.to_dtype(TF.to_image(image.convert("RGB")), torch.float32, scale=True)


def pad_batch(images: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-pad (C, H_i, W_i) images at the bottom/right into (N, C, H, W) plus a real-pixel mask."""
    h = max(int(im.shape[-2]) for im in images)
    w = max(int(im.shape[-1]) for im in images)
    batch = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    mask = torch.zeros((len(images), h, w), dtype=torch.bool, device=images[0].device)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]] = im
        mask[i, : im.shape[-2], : im.shape[-1]] = True
    return batch, mask


def preprocess(
    images: Sequence[ImageInput],
    shortest_edge: int,
    longest_edge: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
) -> Batch:
    """Resize (bilinear, antialiased), normalise with the RGB ``mean`` and ``std`` (a model's
    ``config.image_mean``/``image_std``) and pad.

    Args:
        images: (3, H, W) tensors in [0, 1] (or uint8) or PIL images, of any sizes.
        shortest_edge, longest_edge: see :func:`resized_size`.
    """
    if len(images) == 0:
        raise ValueError("preprocess needs at least one image")
    tensors, sizes = [], []
    for image in images:
        t = to_tensor(image).to(device)
        h, w = int(t.shape[-2]), int(t.shape[-1])
        sizes.append((h, w))
        t = TF.resize(t, list(resized_size(h, w, shortest_edge, longest_edge)), antialias=True)
        tensors.append(TF.normalize(t, list(mean), list(std)))
    pixel_values, pixel_mask = pad_batch(tensors)
    return Batch(pixel_values, pixel_mask, torch.tensor(sizes, device=pixel_values.device))
