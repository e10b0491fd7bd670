"""Batching detection samples: images padded to the batch's largest, targets kept per image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from zoo.models.pipeline.preprocess import pad_batch


@dataclass
class DetectionBatch:
    """``pixel_values`` (N, 3, H, W) zero-padded at the bottom/right, ``pixel_mask``
    (N, H, W) True on real pixels, ``targets`` one dict per image (see
    :class:`zoo.data.coco.CocoDetection`)."""

    pixel_values: Tensor
    pixel_mask: Tensor
    targets: list[dict[str, Tensor]]

    def to(self, device: torch.device | str) -> DetectionBatch:
        """The batch on ``device`` (targets included)."""
        return DetectionBatch(
            self.pixel_values.to(device, non_blocking=True),
            self.pixel_mask.to(device, non_blocking=True),
            [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in self.targets],
        )


def collate(samples: Sequence[tuple[Tensor, dict[str, Tensor]]]) -> DetectionBatch:
    """DataLoader ``collate_fn`` for ``(image (3, H_i, W_i), target)`` samples."""
    images, targets = zip(*samples, strict=True)
    pixel_values, pixel_mask = pad_batch(images)
    return DetectionBatch(pixel_values, pixel_mask, list(targets))
