"""Shared set-up of the training tests (no tests here): a tiny model on tiny shapes images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import zoo
from zoo.data import CocoDetection, ResizeRecipe, eval_transforms, train_transforms
from zoo.data.shapes import CLASSES, ShapesSpec, generate

IMAGE_SIZE = 64
# Deformable DETR at toy size: ResNet-18, 2 levels, hidden 32, 1+2 layers, 8 queries.
TINY: dict[str, Any] = {
    "depth": 18,
    "hidden_dim": 32,
    "nheads": 2,
    "enc_layers": 1,
    "dec_layers": 2,
    "ffn_dim": 64,
    "num_queries": 8,
    "num_levels": 2,
    "enc_points": 2,
    "dec_points": 2,
    "num_classes": len(CLASSES),
}


def tiny_model(name: str = "ddetr", seed: int = 0, **overrides: Any) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.create_model(name, **{**TINY, **overrides})


def shapes_data(root: Path, num_train: int = 8, num_val: int = 4) -> Path:
    spec = ShapesSpec(size=IMAGE_SIZE, max_objects=3)
    return generate(root, num_train, num_val, seed=0, spec=spec)


def shapes_sets(root: Path) -> tuple[CocoDetection, CocoDetection]:
    recipe = ResizeRecipe.for_image_size(IMAGE_SIZE)
    train = CocoDetection(
        root / "train", root / "annotations" / "train.json", train_transforms(recipe)
    )
    val = CocoDetection(root / "val", root / "annotations" / "val.json", eval_transforms(recipe))
    return train, val
