"""Datasets for training and evaluation: COCO format, validation, augmentation, batching, synthetic shapes.

The names below are imported on first use (module ``__getattr__``), so that the ``zoo``
command line can declare ``zoo shapes`` (:mod:`zoo.data.shapes`) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # re-exported through __all__ (ruff cannot see it computed)
    from zoo.data.batching import DetectionBatch, collate  # noqa: F401
    from zoo.data.coco import CocoDetection, category_names, label_mapping, load_coco, split_paths  # noqa: F401
    from zoo.data.transforms import ResizeRecipe, eval_transforms, train_transforms  # noqa: F401
    from zoo.data.validate import DatasetError, check_splits, validate_coco  # noqa: F401

_LAZY: dict[str, str] = {
    "CocoDetection": "zoo.data.coco",
    "category_names": "zoo.data.coco",
    "label_mapping": "zoo.data.coco",
    "load_coco": "zoo.data.coco",
    "split_paths": "zoo.data.coco",
    "DetectionBatch": "zoo.data.batching",
    "collate": "zoo.data.batching",
    "ResizeRecipe": "zoo.data.transforms",
    "eval_transforms": "zoo.data.transforms",
    "train_transforms": "zoo.data.transforms",
    "DatasetError": "zoo.data.validate",
    "check_splits": "zoo.data.validate",
    "validate_coco": "zoo.data.validate",
}

# The public names: those of the table above (the imports under TYPE_CHECKING are for
# type checkers, which cannot follow ``__getattr__``).
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
