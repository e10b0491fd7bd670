"""Datasets for training and evaluation: COCO format, validation, augmentation, batching,
synthetic shapes."""

from zoo.data.coco import CocoDetection, category_names, label_mapping, load_coco, split_paths
from zoo.data.collate import DetectionBatch, collate
from zoo.data.transforms import ResizeRecipe, eval_transforms, train_transforms
from zoo.data.validate import DatasetError, check_splits, validate_coco

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
