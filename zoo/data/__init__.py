"""Datasets for training and evaluation: COCO format, augmentation, batching, synthetic shapes."""

from zoo.data.coco import CocoDetection, category_names, label_mapping, load_coco, split_paths
from zoo.data.collate import DetectionBatch, collate
from zoo.data.transforms import ResizeRecipe, eval_transforms, train_transforms

__all__ = [
    "CocoDetection",
    "DetectionBatch",
    "ResizeRecipe",
    "category_names",
    "collate",
    "eval_transforms",
    "label_mapping",
    "load_coco",
    "split_paths",
    "train_transforms",
]
