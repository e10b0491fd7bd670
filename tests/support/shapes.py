"""The training tests' data: tiny synthetic shapes datasets, and the tiny model they train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from support.tiny import TINY, tiny_model
from zoo.data import CocoDetection, ResizeRecipe, eval_transforms, train_transforms
from zoo.data.shapes import CLASSES, ShapesSpec, generate

IMAGE_SIZE = 64
# The shapes model: the TINY sizes, with 2 feature levels and 2 points (64-pixel images
# leave little to sample at more) and 8 queries for at most 3 objects.
SHAPES_MODEL: dict[str, Any] = {
    **TINY,
    "num_queries": 8,
    "num_levels": 2,
    "enc_points": 2,
    "dec_points": 2,
    "num_classes": len(CLASSES),
}


def shapes_model(name: str = "ddetr", seed: int = 0, **overrides: Any) -> nn.Module:
    """A tiny Deformable DETR for the shapes classes, initialised from ``seed``."""
    return tiny_model(name, seed, **{**SHAPES_MODEL, **overrides})


def shapes_data(root: Path, num_train: int = 8, num_val: int = 4) -> Path:
    """A shapes dataset of ``IMAGE_SIZE`` images, at most 3 objects each, under ``root``."""
    spec = ShapesSpec(size=IMAGE_SIZE, max_objects=3)
    return generate(root, num_train, num_val, seed=0, spec=spec)


def shapes_sets(root: Path) -> tuple[CocoDetection, CocoDetection]:
    """The train (augmented) and val sets of :func:`shapes_data`'s dataset."""
    recipe = ResizeRecipe.for_image_size(IMAGE_SIZE)
    train = CocoDetection(
        root / "train", root / "annotations" / "train.json", train_transforms(recipe)
    )
    val = CocoDetection(root / "val", root / "annotations" / "val.json", eval_transforms(recipe))
    return train, val
