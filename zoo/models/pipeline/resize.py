"""The resize rule: the shorter side to ``shortest_edge``, shrunk so the longer side fits
``longest_edge`` (DETR's evaluation transform). Every path that resizes for a model
(``predict``, ``zoo detect``, evaluation, ONNX export, the benchmarks) goes through here."""

from __future__ import annotations

import torchvision.transforms.v2.functional as TF
from torch import Tensor


def check_edges(shortest_edge: object, longest_edge: object) -> None:
    """Raise ``ValueError`` unless both resize targets are positive integers."""
    for name, value in (("shortest_edge", shortest_edge), ("longest_edge", longest_edge)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int (pixels), got {value!r}")


def resized_size(height: int, width: int, shortest_edge: int, longest_edge: int) -> tuple[int, int]:
    """(H, W) with the shorter side at ``shortest_edge``, shrunk so the longer fits ``longest_edge``."""
    short, long = min(height, width), max(height, width)
    target = shortest_edge
    if long / short * target > longest_edge:
        # At least one pixel: a 1 x 10000 strip must not shrink to nothing.
        target = max(1, round(longest_edge * short / long))
    if short == target:
        return height, width
    # int() truncates like the official transform, so sizes match its evaluation exactly.
    if width < height:
        return int(target * height / width), target
    return target, int(target * width / height)


def resize_image(image: Tensor, shortest_edge: int, longest_edge: int) -> Tensor:
    """``image`` (..., H, W) resized by :func:`resized_size`, bilinear and antialiased."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    return TF.resize(image, list(resized_size(h, w, shortest_edge, longest_edge)), antialias=True)
