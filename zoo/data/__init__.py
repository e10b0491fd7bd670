"""Datasets for training and evaluation: COCO format, validation, augmentation, batching, synthetic shapes.

The names below are imported on first use (module ``__getattr__``), so that the ``zoo``
command line can declare ``zoo shapes`` (:mod:`zoo.data.shapes`) without importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.data.coco import CocoDetection, category_names, label_mapping, load_coco, split_paths
    from zoo.data.collate import DetectionBatch, collate
    from zoo.data.transforms import ResizeRecipe, eval_transforms, train_transforms
    from zoo.data.validate import DatasetError, check_splits, validate_coco

_LAZY: dict[str, str] = {
    "CocoDetection": "zoo.data.coco",
    "category_names": "zoo.data.coco",
    "label_mapping": "zoo.data.coco",
    "load_coco": "zoo.data.coco",
    "split_paths": "zoo.data.coco",
    "DetectionBatch": "zoo.data.collate",
    "collate": "zoo.data.collate",
    "ResizeRecipe": "zoo.data.transforms",
    "eval_transforms": "zoo.data.transforms",
    "train_transforms": "zoo.data.transforms",
    "DatasetError": "zoo.data.validate",
    "check_splits": "zoo.data.validate",
    "validate_coco": "zoo.data.validate",
}

__all__ = [
    "CocoDetection",
    "DatasetError",
    "DetectionBatch",
    "ResizeRecipe",
    "category_names",
    "check_splits",
    "collate",
    "eval_transforms",
    "label_mapping",
    "load_coco",
    "split_paths",
    "train_transforms",
    "validate_coco",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps ``zoo.data.collate`` the function: importing the submodule of the same name
    would otherwise set the package attribute to the module (eager imports hid this)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _LAZY:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
