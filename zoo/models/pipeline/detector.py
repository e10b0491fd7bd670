"""What every detector in the zoo shares: output layout and ``predict`` on raw images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from zoo.models.pipeline.coco_names import COCO_CATEGORY_NAMES
from zoo.models.pipeline.postprocess import Predictions, check_threshold
from zoo.models.pipeline.preprocess import ImageInput, preprocess_for

if TYPE_CHECKING:
    from zoo.models.config import ModelConfig


def padding_mask_from_pixel_mask(pixel_values: Tensor, pixel_mask: Tensor | None) -> Tensor:
    """(N, H, W) padding mask, True on padding, from a mask that is 1/True on real pixels."""
    n, _, h, w = pixel_values.shape
    if pixel_mask is None:
        return torch.zeros((n, h, w), dtype=torch.bool, device=pixel_values.device)
    if pixel_mask.shape != (n, h, w):
        raise ValueError(f"pixel_mask must have shape {(n, h, w)}, got {tuple(pixel_mask.shape)}")
    return ~pixel_mask.to(torch.bool)


class Detector(nn.Module):
    """Base of the zoo's detectors: subclasses implement ``forward`` and ``postprocess``."""

    @staticmethod
    def layer_outputs(logits: Sequence[Tensor], boxes: Sequence[Tensor]) -> dict[str, Any]:
        """Final-layer ``pred_logits``/``pred_boxes`` plus ``aux_outputs`` for the others."""
        out: dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        out["aux_outputs"] = [
            {"pred_logits": a, "pred_boxes": b}
            for a, b in zip(logits[:-1], boxes[:-1], strict=True)
        ]
        return out

    def postprocess(self, outputs: dict, sizes: Tensor, threshold: float) -> list[Predictions]:
        """Turn raw outputs into detections; ``sizes`` (N, 2) holds each image's (H, W)."""
        raise NotImplementedError

    def label_names(self) -> list[str] | None:
        """The names of the class outputs: ``config.class_names``, COCO's for a 91-way
        head (the official models), else None."""
        config = cast("ModelConfig", self.config)
        if config.class_names:
            return list(config.class_names)
        if config.num_classes == len(COCO_CATEGORY_NAMES):
            return list(COCO_CATEGORY_NAMES)
        return None

    @torch.no_grad()
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        threshold: float = 0.5,
        shortest_edge: int | None = None,
        longest_edge: int | None = None,
    ) -> list[Predictions]:
        """Detect objects in images of any sizes.

        Args:
            images: one image or a list of them (or an (N, C, H, W) tensor): PIL images
                of any mode (16-bit read by its range), paths to image files, numpy
                arrays (H, W, 3) RGB (uint8, uint16 or float in [0, 1]), tensors
                (3, H, W) float in [0, 1] or uint8; see
                :func:`zoo.models.pipeline.images.image_to_tensor`. Normalised with the
                configuration's ``image_mean`` and ``image_std``.
            threshold: keep detections scoring above this (a number in [0, 1]).
            shortest_edge, longest_edge: resize like the official evaluation (shorter
                side to ``shortest_edge`` unless the longer would exceed ``longest_edge``).
                Default: the configuration's ``image_size`` (800 for the official
                models) and 1333/800 of it.

        Returns:
            A list with one entry per image, also for a single image: ``boxes`` (K, 4)
            as (x0, y0, x1, y1) in pixels of that image, clipped to it, ``scores``
            (K,), ``labels`` (K,) and, when the model has class names (see
            :meth:`label_names`), ``names`` (K strings).

        Raises:
            TypeError, ValueError: an input that is no image, or a bad size or threshold;
                the message names the argument.
        """
        check_threshold(threshold)
        config = cast("ModelConfig", self.config)
        param = next(self.parameters())
        batch = preprocess_for(config, images, shortest_edge, longest_edge, device=param.device)
        was_training = self.training
        self.eval()
        try:
            outputs = self(batch.pixel_values.to(param.dtype), batch.pixel_mask)
        finally:
            self.train(was_training)
        detections = self.postprocess(outputs, batch.original_sizes, threshold)
        names = self.label_names()
        # Boxes come back clipped to each image (pipeline.postprocess.clip_boxes).
        for pred in detections:
            if names is not None:
                pred["names"] = [names[k] for k in pred["labels"].tolist()]
        return detections
