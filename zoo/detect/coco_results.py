"""Detections as COCO results JSON (``zoo detect --format coco``).

COCO results are a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
(boxes in pixels, xywh), the format pycocotools' ``loadRes``, the COCO evaluation server
and most tools read. Two numbers need a dataset: the category id of each model label and
the id of each image.

- Category ids: from ``--categories FILE`` (a COCO annotations file, or a JSON list of
  ``{"id", "name"}``), matched to the model's class names by name; without a file, COCO's
  own ids for a 91-way COCO head (label = category id), else 1..C in the order of the
  model's class names (the order ``zoo train`` gives them: sorted category ids).
- Image ids: the annotation file's id of the image with the same file name; else the
  file's stem when it is a number (COCO's ``000000397133.jpg`` -> 397133); else the
  image's 1-based position in the input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NUM_COCO_IDS = 91  # the official heads: one output per COCO category id 0..90


class CocoCategories:
    """Categories (and, from an annotations file, images) of a COCO dataset.

    Args:
        categories: ``{"id": int, "name": str}`` dicts.
        images: file name -> image id (empty when the source had no images).
    """

    def __init__(self, categories: Sequence[dict[str, Any]], images: dict[str, int]) -> None:
        self.by_name: dict[str, int] = {}
        for cat in categories:
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                raise ValueError(f"a COCO category needs 'id' and 'name', got {cat!r}")
            self.by_name[str(cat["name"])] = int(cat["id"])
        self.images = images

    @classmethod
    def from_file(cls, path: str | Path) -> CocoCategories:
        """Read a COCO annotations file or a JSON list of categories.

        Raises:
            ValueError: the file is not JSON, or holds neither (the message names it).
        """
        try:
            data = json.loads(Path(path).read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"--categories {str(path)!r} is not a JSON file ({e}): expected a COCO "
                "annotations file or a JSON list of {'id', 'name'} categories"
            ) from None
        if isinstance(data, dict) and "categories" in data:
            images = {Path(im["file_name"]).name: int(im["id"]) for im in data.get("images", [])}
            return cls(data["categories"], images)
        if isinstance(data, list):
            return cls(data, {})
        raise ValueError(
            f"--categories {str(path)!r}: expected a COCO annotations file (with 'categories') "
            "or a JSON list of {'id', 'name'} categories"
        )

    def label_to_category(self, class_names: Sequence[str]) -> list[int | None]:
        """The category id of each model label, matched by name (None: "N/A" labels).

        Raises:
            ValueError: a class name of the model that no category has.
        """
        out: list[int | None] = []
        missing = []
        for name in class_names:
            if name in self.by_name:
                out.append(self.by_name[name])
            elif name == "N/A":
                out.append(None)
            else:
                missing.append(name)
        if missing:
            raise ValueError(
                f"the model's classes {missing} are not among the categories "
                f"{sorted(self.by_name)} (matched by name)"
            )
        return out


def default_label_to_category(class_names: Sequence[str]) -> list[int | None]:
    """Category ids without a dataset: COCO's for a 91-way head, else 1..C in order."""
    if len(class_names) == NUM_COCO_IDS:
        return [None if name == "N/A" else label for label, name in enumerate(class_names)]
    return list(range(1, len(class_names) + 1))


def image_id(path: str | Path, position: int, images: dict[str, int]) -> int:
    """The COCO id of the image file ``path`` (see the module's rules); ``position`` 1-based."""
    name = Path(path).name
    if name in images:
        return images[name]
    stem = Path(path).stem
    return int(stem) if stem.isdigit() else position


def coco_results(
    records: Sequence[dict[str, Any]],
    label_to_category: Sequence[int | None],
    images: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """COCO results of ``zoo detect`` records (:func:`zoo.detect.files.detections_record`).

    Boxes go from xyxy to xywh; labels whose category is None are dropped.
    """
    results = []
    for position, record in enumerate(records, 1):
        img = image_id(record["image"], position, images or {})
        for det in record["detections"]:
            category = label_to_category[det["label"]]
            if category is None:
                continue
            x0, y0, x1, y1 = det["box"]
            results.append(
                {
                    "image_id": img,
                    "category_id": category,
                    "bbox": [round(v, 3) for v in (x0, y0, x1 - x0, y1 - y0)],
                    "score": round(float(det["score"]), 5),
                }
            )
    return results
