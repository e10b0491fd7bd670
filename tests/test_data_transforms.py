"""COCO dataset + augmentation: boxes follow the pixels, batches pad with a correct mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data import CocoDetection, ResizeRecipe, collate, eval_transforms, train_transforms
from zoo.data.transforms import unnormalise

RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)


@pytest.fixture
def rectangles(tmp_path: Path) -> Path:
    """Two images 96x128: a red and a blue rectangle (labelled), and an empty one."""
    pixels = np.full((96, 128, 3), GREY, dtype=np.uint8)
    pixels[10:40, 70:120] = RED  # x 70..120, y 10..40
    pixels[50:90, 8:40] = BLUE  # x 8..40, y 50..90
    (tmp_path / "img").mkdir()
    Image.fromarray(pixels).save(tmp_path / "img" / "a.png")
    Image.fromarray(np.full((96, 128, 3), GREY, dtype=np.uint8)).save(tmp_path / "img" / "b.png")
    coco = {
        "images": [
            {"id": 7, "file_name": "a.png", "width": 128, "height": 96},
            {"id": 9, "file_name": "b.png", "width": 128, "height": 96},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "bbox": [70, 10, 50, 30],
                "area": 1500,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 5,
                "bbox": [8, 50, 32, 40],
                "area": 1280,
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 3, "name": "red"}, {"id": 5, "name": "blue"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return tmp_path


def _colour_at(image: torch.Tensor, x: float, y: float) -> tuple[int, ...]:
    pixel = unnormalise(image)[:, int(y), int(x)]
    return tuple(int(v) for v in (pixel * 255).round().clamp(0, 255))


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_boxes_follow_pixels_through_flip_resize_crop(rectangles: Path) -> None:
    recipe = ResizeRecipe.for_image_size(96)
    ds = CocoDetection(rectangles / "img", rectangles / "ann.json", train_transforms(recipe))
    assert ds.label_to_category == [3, 5]
    seen_sizes, flipped = set(), 0
    for epoch in range(40):
        ds.set_epoch(epoch)
        image, target = ds[0]
        h, w = image.shape[-2:]
        assert tuple(target["size"].tolist()) == (h, w)
        assert tuple(target["orig_size"].tolist()) == (96, 128)
        seen_sizes.add((h, w))
        for (cx, cy, bw, _), label in zip(
            target["boxes"].tolist(), target["labels"].tolist(), strict=True
        ):
            assert -1e-6 <= cx - bw / 2 and cx + bw / 2 <= 1 + 1e-6
            colour = RED if label == 0 else BLUE
            assert _close(_colour_at(image, cx * w, cy * h), colour)
            # A point just outside the box (where the image continues) is background.
            x_out = (cx + bw / 2) * w + 2
            if x_out < w - 1:
                assert _close(_colour_at(image, x_out, cy * h), GREY)
            if label == 0 and cx < 0.5:
                flipped += 1
    assert len(seen_sizes) > 3  # multi-scale and crops really happened
    assert 0 < flipped < 40


def test_same_epoch_same_augmentation(rectangles: Path) -> None:
    ds = CocoDetection(
        rectangles / "img",
        rectangles / "ann.json",
        train_transforms(ResizeRecipe.for_image_size(96)),
    )
    ds.set_epoch(3)
    a, b = ds[0], ds[0]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])


def test_eval_transform_and_empty_image(rectangles: Path) -> None:
    recipe = ResizeRecipe(scales=(48,), max_size=1000)
    ds = CocoDetection(rectangles / "img", rectangles / "ann.json", eval_transforms(recipe))
    image, target = ds[0]
    assert image.shape == (3, 48, 64)
    expected = torch.tensor(
        [[95 / 128, 25 / 96, 50 / 128, 30 / 96], [24 / 128, 70 / 96, 32 / 128, 40 / 96]]
    )
    torch.testing.assert_close(target["boxes"], expected)
    _, empty_target = ds[1]
    assert empty_target["boxes"].shape == (0, 4) and empty_target["labels"].shape == (0,)
    assert empty_target["labels"].dtype == torch.int64


def test_collate_pads_with_mask(rectangles: Path) -> None:
    ds = CocoDetection(
        rectangles / "img",
        rectangles / "ann.json",
        train_transforms(ResizeRecipe.for_image_size(96)),
    )
    samples = []
    for epoch in range(20):
        ds.set_epoch(epoch)
        samples.append(ds[epoch % 2])
    batch = collate(samples)
    h = max(s[0].shape[1] for s in samples)
    w = max(s[0].shape[2] for s in samples)
    assert batch.pixel_values.shape == (20, 3, h, w)
    assert batch.pixel_mask.dtype == torch.bool
    for i, (image, target) in enumerate(samples):
        ih, iw = image.shape[1:]
        assert batch.pixel_mask[i, :ih, :iw].all()
        assert batch.pixel_mask[i].sum() == ih * iw
        assert torch.equal(batch.pixel_values[i, :, :ih, :iw], image)
        assert (batch.pixel_values[i][:, ~batch.pixel_mask[i]] == 0).all()
        assert batch.targets[i] is target
