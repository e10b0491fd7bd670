"""What every detector in the zoo shares: output layout and ``predict`` on raw images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict, cast

import torch
from torch import Tensor, nn

from zoo.models.preprocess import ImageInput, preprocess

if TYPE_CHECKING:
    from zoo.models.config import ModelConfig

# The official evaluation resizes the shorter side to 800 and caps the longer at 1333.
_MAX_SIZE_RATIO = 1333 / 800


class Predictions(TypedDict):
    """Detections of one image: ``boxes`` (K, 4) xyxy in pixels, ``scores`` (K,), ``labels`` (K,)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


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

    @torch.no_grad()
    def predict(
        self,
        images: Sequence[ImageInput],
        threshold: float = 0.5,
        shortest_edge: int | None = None,
        longest_edge: int | None = None,
    ) -> list[Predictions]:
        """Detect objects in images of any sizes.

        Args:
            images: CHW float tensors in [0, 1] or PIL images; normalised with the
                configuration's ``image_mean`` and ``image_std``.
            threshold: keep detections scoring above this.
            shortest_edge, longest_edge: resize like the official evaluation (shorter
                side to ``shortest_edge`` unless the longer would exceed ``longest_edge``).
                Default: the configuration's ``image_size`` (800 for the official
                models) and 1333/800 of it.

        Returns:
            Per image, ``boxes`` (K, 4) as (x0, y0, x1, y1) in pixels of that image,
            ``scores`` (K,) and ``labels`` (K,).
        """
        config = cast("ModelConfig", self.config)
        shortest, longest = inference_size(config.image_size, shortest_edge)
        longest_edge = longest if longest_edge is None else longest_edge
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
        return self.postprocess(outputs, batch.original_sizes, threshold)
