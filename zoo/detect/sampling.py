"""Where Deformable DETR looked: the decoder's sampling points for the top detections.

``zoo detect --show-sampling`` draws them. They are read through the model's own
hook, :meth:`~zoo.models.deformable.model.DeformableDETR.record_sampling`, around a plain
``model.predict`` call: the detections are exactly ``predict``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor, nn

from zoo.models.deformable.model import DeformableDETR
from zoo.models.parts.box_ops import scale_boxes
from zoo.models.pipeline.postprocess import Predictions
from zoo.models.pipeline.preprocess import ImageInput


@dataclass
class SamplingView:
    """The last decoder layer's cross-attention for the top queries of one image.

    ``boxes`` (K, 4) xyxy, ``references`` (K, 2) and ``locations`` (K, M, L, P, 2)
    (x, y) are in pixels of the original image; ``weights`` (K, M, L, P);
    ``strides`` each level's stride in the network input.
    """

    boxes: Tensor
    references: Tensor
    locations: Tensor
    weights: Tensor
    strides: list[int]


def supports_sampling(model: nn.Module) -> bool:
    """Whether ``model`` has deformable cross-attention (sampling points) to show."""
    return isinstance(model, DeformableDETR)


def level_strides(model: DeformableDETR) -> list[int]:
    """Each feature level's stride in the network input: the backbone stages', then
    every extra level (a stride-2 convolution) doubles the previous one."""
    strides = list(model.backbone.strides)
    while len(strides) < model.config.num_levels:
        strides.append(2 * strides[-1])
    return strides


@torch.no_grad()
def predict_with_sampling(
    model: nn.Module,
    images: Sequence[ImageInput],
    threshold: float,
    top_k: int = 5,
    image_size: int | None = None,
) -> tuple[list[Predictions], list[SamplingView]]:
    """``model.predict(images, threshold, shortest_edge=image_size)`` plus, per image, the
    attention of its ``top_k`` best queries (ranked by their best class score, above
    ``threshold``).

    Raises:
        ValueError: ``model`` is not a Deformable DETR (DETR attends densely).
    """
    if not isinstance(model, DeformableDETR):
        raise ValueError(
            f"sampling points need a Deformable DETR model; {type(model).__name__} has "
            "dense attention (no sampling points)"
        )
    with model.record_sampling() as calls:
        predictions = model.predict(images, threshold=threshold, shortest_edge=image_size)
    (outputs,) = calls
    strides = level_strides(model)
    scores = outputs["pred_logits"].sigmoid().amax(-1)  # (N, Q)
    views = []
    for i, image in enumerate(images):
        h, w = (image.height, image.width) if isinstance(image, Image.Image) else image.shape[-2:]
        top, query = scores[i].topk(min(top_k, scores.shape[1]))
        query = query[top > threshold]
        scale = torch.tensor([w, h], dtype=scores.dtype, device=scores.device)
        # Locations are normalised to each level's padded map; divided by the valid
        # ratio they are normalised to the real image, like the references.
        ratios = outputs["valid_ratios"][i][None, None, :, None, :]
        locations = outputs["sampling_locations"][-1, i, query] / ratios * scale
        size = torch.tensor([[h, w]], device=scores.device)
        boxes = scale_boxes(outputs["pred_boxes"][i : i + 1, query], size)
        views.append(
            SamplingView(
                boxes=boxes[0].cpu(),
                references=(outputs["reference_points"][i, query, :2] * scale).cpu(),
                locations=locations.cpu(),
                weights=outputs["attention_weights"][-1, i, query].cpu(),
                strides=strides,
            )
        )
    return predictions, views
