"""Images to a padded, normalised batch, as the official evaluation pipeline prepares them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor

from zoo.models.pipeline.images import image_to_tensor
from zoo.models.pipeline.resize import check_edges, inference_size, resize_image

# A PIL image, a path, a numpy array (H, W[, C]) or a tensor ([C,] H, W): see
# :func:`zoo.models.pipeline.images.image_to_tensor`.
ImageInput = Any


@dataclass
class Batch:
    """``pixel_values`` (N, 3, H, W), ``pixel_mask`` (N, H, W) True on real pixels,
    ``original_sizes`` (N, 2) each input's (H, W) before resizing."""

    pixel_values: Tensor
    pixel_mask: Tensor
    original_sizes: Tensor


def image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """``images`` as a list: one image (PIL, path, array, 2-D/3-D tensor), a (N, C, H, W)
    tensor (N images) or a sequence of images.

    Raises:
        ValueError: no image at all.
    """
    if isinstance(images, Image.Image | str | Path | np.ndarray):
        return [images]
    if isinstance(images, Tensor):
        items = list(images) if images.dim() == 4 else [images]
    elif isinstance(images, Sequence):
        items = list(images)
    else:
        raise TypeError(
            "images: expected an image (PIL, path, numpy array, tensor) or a list of them, "
            f"got {type(images).__name__}"
        )
    if len(items) == 0:
        raise ValueError("images: got no image (an empty list or batch); pass at least one")
    return items


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
    images: ImageInput | Sequence[ImageInput],
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
        images: one image or a list (see :func:`image_list`), of any sizes: PIL images,
            paths, numpy arrays or tensors (see :func:`zoo.models.pipeline.images.image_to_tensor`).
        shortest_edge, longest_edge: see :func:`zoo.models.pipeline.resize.resized_size`.

    Raises:
        TypeError, ValueError: an argument that is no image or no size; the message
            names it (``images[i]``, ``shortest_edge``...).
    """
    check_edges(shortest_edge, longest_edge)
    items = image_list(images)
    tensors, sizes = [], []
    for i, image in enumerate(items):
        name = "images" if image is images else f"images[{i}]"
        t = image_to_tensor(image, name).to(device)
        sizes.append((int(t.shape[-2]), int(t.shape[-1])))
        t = resize_image(t, shortest_edge, longest_edge)
        tensors.append(TF.normalize(t, list(mean), list(std)))
    pixel_values, pixel_mask = pad_batch(tensors)
    return Batch(pixel_values, pixel_mask, torch.tensor(sizes, device=pixel_values.device))


def edges_for(
    config: Any, shortest_edge: int | None = None, longest_edge: int | None = None
) -> tuple[int, int]:
    """The (shorter side, cap on the longer side) a model resizes to.

    ``config`` has ``image_size`` (a model's configuration, or an exported model's
    metadata, which also records its ``longest_edge``). Given edges win; without
    ``shortest_edge`` the cap is the model's own (its ``longest_edge`` when it records
    one, else 1333/800 of ``image_size``), with it the cap keeps the official ratio.

    Raises:
        ValueError: an edge that is not a positive int; the message names it.
    """
    if shortest_edge is not None:
        check_edges(shortest_edge, 1)
    shortest, longest = inference_size(config.image_size, shortest_edge)
    if shortest_edge is None:
        longest = getattr(config, "longest_edge", longest)
    if longest_edge is not None:
        longest = longest_edge
    check_edges(shortest, longest)
    return shortest, longest


def preprocess_for(
    config: Any,
    images: ImageInput | Sequence[ImageInput],
    shortest_edge: int | None = None,
    longest_edge: int | None = None,
    *,
    device: torch.device | str | None = None,
) -> Batch:
    """:func:`preprocess` as the model with ``config`` expects its inputs: resized to
    :func:`edges_for` and normalised with its ``image_mean`` and ``image_std``.

    Returns a :class:`Batch`: ``pixel_values`` (N, 3, H, W), ``pixel_mask`` (N, H, W),
    ``original_sizes`` (N, 2).
    """
    shortest, longest = edges_for(config, shortest_edge, longest_edge)
    return preprocess(
        images, shortest, longest, mean=config.image_mean, std=config.image_std, device=device
    )
