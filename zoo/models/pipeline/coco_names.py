"""Class names for drawing: COCO's 91 category ids (as the official heads use them) or generic."""

from __future__ import annotations

from collections.abc import Sequence

# Index = COCO category id. The released DETR and Deformable DETR heads have 91
# outputs, one per id up to 90; ids COCO never used (0, 12, 26, ...) read "N/A".
COCO_CATEGORY_NAMES: tuple[str, ...] = (
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup",
    "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


def class_names(num_classes: int, names: Sequence[str] = ()) -> list[str]:
    """Names of a head's ``num_classes`` outputs.

    ``names`` when given (a model's ``config.class_names``), else COCO's for a 91-way
    head, else ``class k``.
    """
    if names:
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes")
        return list(names)
    if num_classes == len(COCO_CATEGORY_NAMES):
        return list(COCO_CATEGORY_NAMES)
    return [f"class {k}" for k in range(num_classes)]
