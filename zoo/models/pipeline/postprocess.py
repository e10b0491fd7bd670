"""Raw outputs to per-image detections, as the official post-processors do."""

from __future__ import annotations

from typing import NotRequired, TypedDict

import torch
from torch import Tensor

from zoo.models.parts.box_ops import scale_boxes


class Predictions(TypedDict):
    """Detections of one image: ``boxes`` (K, 4) xyxy in pixels, ``scores`` (K,), ``labels`` (K,)
    and, from ``predict`` on a model with class names, ``names`` (K labels' names)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    names: NotRequired[list[str]]


def clip_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """(N, K, 4) xyxy pixel boxes clipped to each image: x in [0, W], y in [0, H].

    ``sizes`` (N, 2) holds (H, W). A predicted box may reach past the border (its centre
    and size are free); detections and COCO results stay inside the image.
    """
    h, w = sizes.to(boxes.dtype).unbind(-1)
    upper = torch.stack([w, h, w, h], dim=-1)[:, None, :]
    return torch.minimum(boxes.clamp(min=0), upper)


def check_threshold(threshold: object) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``threshold`` is a number in [0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise TypeError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")


def _keep(boxes: Tensor, scores: Tensor, labels: Tensor, threshold: float) -> list[Predictions]:
    out: list[Predictions] = []
    for b, s, lab in zip(boxes, scores, labels, strict=True):
        keep = s > threshold
        out.append({"boxes": b[keep], "scores": s[keep], "labels": lab[keep]})
    return out


def postprocess_softmax(outputs: dict, sizes: Tensor, threshold: float = 0.5) -> list[Predictions]:
    """DETR: softmax over classes, the no-object column dropped, best class per query.

    Args:
        outputs: ``pred_logits`` (N, Q, C + 1), ``pred_boxes`` (N, Q, 4).
        sizes: (N, 2) each image's (H, W) in pixels.
    """
    prob = outputs["pred_logits"].softmax(-1)[..., :-1]
    scores, labels = prob.max(-1)
    boxes = clip_boxes(scale_boxes(outputs["pred_boxes"], sizes), sizes)
    return _keep(boxes, scores, labels, threshold)


def postprocess_topk(
    outputs: dict, sizes: Tensor, threshold: float = 0.0, k: int = 100
) -> list[Predictions]:
    """Deformable DETR: sigmoid scores, the top ``k`` over all (query, class) pairs.

    A query may appear several times with different classes, as in the official code.

    Args:
        outputs: ``pred_logits`` (N, Q, C), ``pred_boxes`` (N, Q, 4).
        sizes: (N, 2) each image's (H, W) in pixels.
    """
    logits = outputs["pred_logits"]
    n, q, c = logits.shape
    prob = logits.sigmoid().view(n, q * c)
    scores, index = prob.topk(min(k, q * c), dim=1)
    query = torch.div(index, c, rounding_mode="floor")
    labels = index % c
    boxes = torch.gather(outputs["pred_boxes"], 1, query[..., None].expand(-1, -1, 4))
    return _keep(clip_boxes(scale_boxes(boxes, sizes), sizes), scores, labels, threshold)
