"""What every detector in the zoo shares: output layout and ``predict`` on raw images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

import torch
from torch import Tensor, nn

from zoo.models.pipeline.coco_names import COCO_CATEGORY_NAMES
from zoo.models.pipeline.preprocess import ImageInput, preprocess
from zoo.models.pipeline.resize import check_edges

if TYPE_CHECKING:
    from zoo.models.config import ModelConfig

# The official evaluation resizes the shorter side to 800 and caps the longer at 1333.
_MAX_SIZE_RATIO = 1333 / 800


class Predictions(TypedDict):
    """Detections of one image: ``boxes`` (K, 4) xyxy in pixels, ``scores`` (K,), ``labels`` (K,)
    and, from ``predict`` on a model with class names, ``names`` (K labels' names)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    names: NotRequired[list[str]]


def padding_mask_from_pixel_mask(pixel_values: Tensor, pixel_mask: Tensor | None) -> Tensor:
    """(N, H, W) padding mask, True on padding, from a mask that is 1/True on real pixels."""
    n, _, h, w = pixel_values.shape
    if pixel_mask is None:
        return torch.zeros((n, h, w), dtype=torch.bool, device=pixel_values.device)
    if pixel_mask.shape != (n, h, w):
        raise ValueError(f"pixel_mask must have shape {(n, h, w)}, got {tuple(pixel_mask.shape)}")
    return ~pixel_mask.to(torch.bool)


def inference_size(image_size: int, shortest_edge: int | None = None) -> tuple[int, int]:
    """(shorter side, cap on the longer side) to resize to at inference.

    ``shortest_edge`` or else a model's ``config.image_size``; the cap keeps the
    official 1333/800 ratio.
    """
    shortest = image_size if shortest_edge is None else shortest_edge
    return shortest, round(shortest * _MAX_SIZE_RATIO)


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
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise TypeError(f"threshold must be a number in [0, 1], got {threshold!r}")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        config = cast("ModelConfig", self.config)
        shortest, longest = inference_size(config.image_size, shortest_edge)
        if longest_edge is None:
            check_edges(shortest, 1)
            longest_edge = longest
        param = next(self.parameters())
        batch = preprocess(
            images,
            shortest,
            longest_edge,
            mean=config.image_mean,
            std=config.image_std,
            device=param.device,
        )
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
