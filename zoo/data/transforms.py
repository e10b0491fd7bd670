"""Box-aware augmentation of the official DETR / Deformable DETR recipe, on transforms.v2.

Training: random horizontal flip, then either a multi-scale resize of the shorter side
(capped by a maximum longer side), or a resize, a random-size crop and the multi-scale
resize again; then normalisation with the model's ``image_mean``/``image_std`` (ImageNet's by default). torchvision moves the boxes with the pixels
(``tv_tensors.BoundingBoxes``), and :class:`~torchvision.transforms.v2.SanitizeBoundingBoxes`
drops the boxes a crop emptied together with their labels.

Evaluation: exactly what ``predict`` and ``zoo detect`` do to an image (:class:`PredictResize`:
pixels to float in [0, 1] by the one image reader's rule, then the one resize rule of
:mod:`zoo.models.pipeline.resize`, bilinear and antialiased), then normalisation; so the AP
that ``zoo eval`` reports is the AP of what ``zoo detect`` draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision import tv_tensors

from zoo.models.config import IMAGENET_MEAN, IMAGENET_STD
from zoo.models.pipeline.images import image_to_tensor
from zoo.models.pipeline.resize import check_edges, resize_image, resized_size


@dataclass(frozen=True)
class ResizeRecipe:
    """Sizes of the augmentation, in pixels. The defaults are the official COCO recipe.

    ``scales``: candidate shorter sides (training; evaluation uses the largest);
    ``max_size``: cap on the longer side; ``crop_scales``: shorter sides before the
    crop; ``crop_min``, ``crop_max``: range of the crop's width and height.
    """

    scales: tuple[int, ...] = tuple(range(480, 801, 32))
    max_size: int = 1333
    crop_scales: tuple[int, ...] = (400, 500, 600)
    crop_min: int = 384
    crop_max: int = 600

    @classmethod
    def for_image_size(cls, size: int, base: ResizeRecipe | None = None) -> ResizeRecipe:
        """The official recipe scaled so that the largest training scale is ``size``.

        Small synthetic images (64 or 128 pixels) then get the same relative jitter
        as COCO images get at 800 pixels.
        """
        base = base or cls()
        factor = size / max(base.scales)

        def scale(values: Sequence[int]) -> tuple[int, ...]:
            return tuple(sorted({max(1, round(v * factor)) for v in values}))

        return cls(
            scales=scale(base.scales),
            # size * 1333 / 800 for the official base: the integer inference_size computes.
            max_size=max(1, round(base.max_size * size / max(base.scales))),
            crop_scales=scale(base.crop_scales),
            crop_min=max(1, round(base.crop_min * factor)),
            crop_max=max(1, round(base.crop_max * factor)),
        )


class RandomSizeCrop(v2.Transform):
    """Crop a random window of width and height in ``[min_size, max_size]`` (clipped to the image).

    The official ``RandomSizeCrop``; torchvision's ``crop`` kernels move the boxes.
    """

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        self.min_size = min_size
        self.max_size = max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next(x for x in flat_inputs if isinstance(x, (tv_tensors.Image, Tensor)))
        height, width = TF.get_size(image)
        h = self._draw(height)
        w = self._draw(width)
        top = int(torch.randint(0, height - h + 1, ()))
        left = int(torch.randint(0, width - w + 1, ()))
        return {"top": top, "left": left, "height": h, "width": w}

    def _draw(self, side: int) -> int:
        high = min(side, self.max_size)
        low = min(self.min_size, high)
        return int(torch.randint(low, high + 1, ()))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.crop, inpt, **params)


class PredictResize(v2.Transform):
    """The inference preprocessing's resize, on an image and its boxes.

    The image becomes float in [0, 1] first (as :func:`~zoo.models.pipeline.images.image_to_tensor`
    reads it for ``predict``) and is resized by
    :func:`~zoo.models.pipeline.resize.resize_image`: the same size, interpolation and
    values as :func:`~zoo.models.pipeline.preprocess.preprocess`. Boxes follow the pixels.
    """

    def __init__(self, shortest_edge: int, longest_edge: int) -> None:
        super().__init__()
        check_edges(shortest_edge, longest_edge)
        self.shortest_edge = shortest_edge
        self.longest_edge = longest_edge

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next(x for x in flat_inputs if isinstance(x, (tv_tensors.Image, Tensor)))
        height, width = TF.get_size(image)
        return {"size": resized_size(height, width, self.shortest_edge, self.longest_edge)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return TF.resize(inpt, list(params["size"]))
        if isinstance(inpt, tv_tensors.Image) or type(inpt) is Tensor:
            pixels = image_to_tensor(inpt.as_subclass(Tensor))
            resized = resize_image(pixels, self.shortest_edge, self.longest_edge)
            return (
                tv_tensors.wrap(resized, like=inpt)
                if isinstance(inpt, tv_tensors.Image)
                else resized
            )
        return inpt


Stats = Sequence[float]


def _finish(mean: Stats, std: Stats) -> list[v2.Transform]:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
        # Crops and clamping can leave boxes of zero size; drop them with their labels.
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0),
    ]


def train_transforms(
    recipe: ResizeRecipe | None = None, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD
) -> v2.Compose:
    """The official training augmentation on ``(image, {"boxes", "labels", ...})`` samples.

    ``mean``, ``std``: the model's ``config.image_mean`` and ``config.image_std``.
    """
    recipe = recipe or ResizeRecipe()
    resize = v2.RandomShortestSize(list(recipe.scales), max_size=recipe.max_size)
    crop_then_resize = v2.Compose(
        [
            v2.RandomShortestSize(list(recipe.crop_scales)),
            RandomSizeCrop(recipe.crop_min, recipe.crop_max),
            v2.RandomShortestSize(list(recipe.scales), max_size=recipe.max_size),
        ]
    )
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomChoice([resize, crop_then_resize]),
            *_finish(mean, std),
        ]
    )


def eval_transforms(
    recipe: ResizeRecipe | None = None, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD
) -> v2.Compose:
    """:class:`PredictResize` to the largest training scale (longer side capped at
    ``recipe.max_size``), then normalise: the values ``preprocess`` gives ``predict``."""
    recipe = recipe or ResizeRecipe()
    return v2.Compose(
        [
            PredictResize(max(recipe.scales), recipe.max_size),
            v2.Normalize(list(mean), list(std)),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=1.0),
        ]
    )


def unnormalise(image: Tensor, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD) -> Tensor:
    """(3, H, W) normalised with ``mean``/``std`` -> [0, 1] pixel values."""
    m = torch.tensor(mean, dtype=image.dtype)[:, None, None]
    s = torch.tensor(std, dtype=image.dtype)[:, None, None]
    return image * s + m


def normalised_cxcywh(boxes: tv_tensors.BoundingBoxes) -> Tensor:
    """(T, 4) boxes in any format -> (T, 4) cxcywh divided by the image (W, H, W, H)."""
    height, width = boxes.canvas_size
    cxcywh = TF.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.CXCYWH)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    return cxcywh.as_subclass(Tensor).to(torch.float32) / scale
