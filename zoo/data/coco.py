"""A COCO-format detection dataset yielding normalised images and cxcywh targets.

Each sample is ``(image, target)``: ``image`` (3, H, W) float, ImageNet-normalised
after the transforms; ``target`` holds ``boxes`` (T, 4) cxcywh divided by the
transformed image's (W, H, W, H), ``labels`` (T,) int64, ``image_id``, ``orig_size``
(2,) and ``size`` (2,) as (H, W) before and after the transforms.

Augmentation randomness is drawn from a generator seeded by (seed, epoch, index), so a
sample is the same whichever worker loads it and whether or not training was resumed.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from zoo.data.transforms import normalised_cxcywh
from zoo.data.validate import check_splits
from zoo.models.pipeline.images import open_image, to_rgb_image

Transform = Callable[[Any, Any], tuple[Any, Any]]


def load_coco(annotation_file: str | Path | dict[str, Any]) -> COCO:
    """pycocotools' index of ``annotation_file`` (or of an annotation dict), without its
    progress prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        if not isinstance(annotation_file, dict):
            return COCO(str(annotation_file))
        coco = COCO()
        coco.dataset = annotation_file
        coco.createIndex()
        return coco


def label_mapping(category_ids: Sequence[int], num_classes: int | None = None) -> list[int]:
    """``label_to_category``: the COCO category id of each model label.

    Contiguous labels (sorted category ids) when ``num_classes`` is None or equals the
    number of categories; otherwise labels *are* category ids (``num_classes`` > the
    largest id), as in the official COCO checkpoints with their 91 classes.
    """
    ids = sorted(category_ids)
    if num_classes is None or num_classes == len(ids):
        return ids
    if ids and max(ids) < num_classes:
        return list(range(num_classes))
    raise ValueError(
        f"{len(ids)} categories (ids up to {max(ids, default=0)}) do not fit {num_classes} classes"
    )


def category_names(coco: Any, num_classes: int | None = None) -> tuple[str, ...]:
    """The name of each model label (see :func:`label_mapping`); "N/A" for unused ids."""
    cats = coco.cats
    return tuple(
        cats[c]["name"] if c in cats else "N/A" for c in label_mapping(list(cats), num_classes)
    )


class CocoDetection(Dataset):
    """Images of ``images_dir`` annotated by ``annotation_file`` (crowd boxes ignored).

    Args:
        transforms: a ``(image, target) -> (image, target)`` transform that normalises
            the image (see :mod:`zoo.data.transforms`); boxes arrive as XYXY
            ``tv_tensors.BoundingBoxes``.
        num_classes: the model's class count (see :func:`label_mapping`).
        seed: base seed of the augmentation.
        validate: check the annotations and image files first
            (:func:`zoo.data.validate.validate_coco`): errors raise
            :class:`~zoo.data.validate.DatasetError` listing all of them, fixable boxes are
            clipped or dropped with a warning.
        dataset: the annotation dict already validated (by
            :func:`zoo.data.validate.check_splits`): used instead of reading the file.
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotation_file: str | Path,
        transforms: Transform,
        num_classes: int | None = None,
        seed: int = 0,
        validate: bool = True,
        dataset: dict[str, Any] | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        if dataset is None and validate:
            (dataset,) = check_splits([(self.images_dir, Path(annotation_file))])
        self.coco = load_coco(annotation_file if dataset is None else dataset)
        self.ids = sorted(self.coco.imgs)
        self.transforms = transforms
        self.label_to_category = label_mapping(list(self.coco.cats), num_classes)
        self._label_of = {c: i for i, c in enumerate(self.label_to_category)}
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's augmentation (call before creating the loader's iterator)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def raw_sample(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """The untransformed uint8 image and its XYXY boxes and labels."""
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        # The one image reader (16-bit and alpha read by their real range); no EXIF
        # rotation: COCO's boxes are drawn on the stored pixel grid.
        pil = to_rgb_image(open_image(self.images_dir / info["file_name"], exif_rotate=False))
        image = tv_tensors.Image(TF.pil_to_tensor(pil))
        height, width = image.shape[-2:]
        anns = [a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes = tv_tensors.BoundingBoxes(
            xywh, format=tv_tensors.BoundingBoxFormat.XYWH, canvas_size=(height, width)
        )
        boxes = TF.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY)
        labels = torch.tensor([self._label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        return image, {"boxes": boxes, "labels": labels}

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.raw_sample(index)
        orig_size = torch.tensor(image.shape[-2:])
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image, target = self.transforms(image, target)
        return image.as_subclass(Tensor), {
            "boxes": normalised_cxcywh(target["boxes"]),
            "labels": target["labels"],
            "image_id": torch.tensor(self.ids[index]),
            "orig_size": orig_size,
            "size": torch.tensor(image.shape[-2:]),
        }


def split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(images folder, annotation file) of ``split`` in a dataset folder.

    Two layouts are recognised: ``root/annotations/{split}.json`` with images in
    ``root/{split}/`` (what :mod:`zoo.data.shapes` writes), and COCO 2017's
    ``root/annotations/instances_{split}2017.json`` with ``root/{split}2017/``.
    """
    root = Path(root)
    for ann, images in (
        (root / "annotations" / f"{split}.json", root / split),
        (root / "annotations" / f"instances_{split}2017.json", root / f"{split}2017"),
    ):
        if ann.is_file():
            return images, ann
    raise FileNotFoundError(
        f"no {split!r} split in {root}: expected annotations/{split}.json + {split}/ "
        f"or annotations/instances_{split}2017.json + {split}2017/"
    )
