"""The synthetic shapes dataset: deterministic, valid COCO, seed-dependent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.cli import main as cli_main
from zoo.data.areas import bucket_counts, size_buckets
from zoo.data.coco import load_coco
from zoo.data.shapes import CLASSES, ShapesSpec, generate, render_image


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = _files(generate(tmp_path / "a", 6, 3, size=64, seed=3))
    b = _files(generate(tmp_path / "b", 6, 3, size=64, seed=3))
    assert a == b
    assert len(a) == 6 + 3 + 2


def test_different_seeds_differ(tmp_path: Path) -> None:
    a = _files(generate(tmp_path / "a", 4, 0, size=64, seed=0))
    b = _files(generate(tmp_path / "b", 4, 0, size=64, seed=1))
    assert a["annotations/train.json"] != b["annotations/train.json"]
    assert all(a[k] != b[k] for k in a if k.endswith(".png"))


def test_zoo_shapes_command_writes_the_same_bytes(tmp_path: Path) -> None:
    args = ["--num-train", "2", "--num-val", "1", "--size", "48", "--seed", "4"]
    assert cli_main(["shapes", str(tmp_path / "cli"), *args]) == 0
    generate(tmp_path / "api", 2, 1, seed=4, spec=ShapesSpec(size=48))
    assert _files(tmp_path / "cli") == _files(tmp_path / "api")


def test_train_and_val_differ(tmp_path: Path) -> None:
    files = _files(generate(tmp_path, 3, 3, size=64, seed=0))
    assert all(files[f"train/{i:06d}.png"] != files[f"val/{i:06d}.png"] for i in (1, 2, 3))


def test_annotations_are_valid_coco(tmp_path: Path) -> None:
    argv = [str(tmp_path), "--num-train", "12", "--num-val", "2", "--size", "96", "--seed", "5"]
    assert cli_main(["shapes", *argv]) == 0
    coco = load_coco(tmp_path / "annotations" / "train.json")
    assert sorted(coco.cats) == list(range(1, len(CLASSES) + 1))
    assert len(coco.imgs) == 12
    assert len(coco.anns) >= 12  # at least one visible object per image
    for ann in coco.anns.values():
        info = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= info["width"] and y + h <= info["height"]
        assert w > 0 and h > 0
        assert 0 < ann["area"] <= w * h
        assert ann["iscrowd"] == 0
    for info in coco.imgs.values():
        with Image.open(tmp_path / "train" / info["file_name"]) as im:
            assert im.size == (info["width"], info["height"])
            assert im.mode == "RGB"


def test_boxes_are_tight_around_a_shape(tmp_path: Path) -> None:
    """The pixels just inside a box's edges differ from the background outside it."""
    generate(tmp_path, 8, 0, size=96, seed=2)
    coco = load_coco(tmp_path / "annotations" / "train.json")
    for ann in coco.anns.values():
        info = coco.imgs[ann["image_id"]]
        pixels = np.asarray(Image.open(tmp_path / "train" / info["file_name"]), dtype=np.int64)
        x, y, w, h = ann["bbox"]
        inside = pixels[y : y + h, x : x + w]
        # Noise varies every pixel a little; a shape is a flat colour covering its area.
        _, counts = np.unique(inside.reshape(-1, 3), axis=0, return_counts=True)
        assert counts.max() >= 0.5 * ann["area"]


def test_size_buckets_scale_cocos_thresholds_with_the_image_area() -> None:
    # COCO: 32^2 and 96^2 px at 640 px; at 128 px the side is a fifth, the area 1/25.
    assert size_buckets(640) == (1024.0, 9216.0)
    assert size_buckets(128) == pytest.approx((1024 / 25, 9216 / 25))
    assert bucket_counts([1.0, 40.9, 41.0, 368.6, 369.0, 1e4], 128) == {
        "small": 2,
        "medium": 2,
        "large": 2,
    }
    with pytest.raises(ValueError, match="image_size"):
        size_buckets(0)


def test_multi_size_setting_fills_every_bucket(tmp_path: Path) -> None:
    spec = ShapesSpec.multi_size(128)
    rng = np.random.default_rng(0)
    areas: list[float] = []
    for _ in range(150):
        _, objects = render_image(rng, spec)
        assert spec.min_objects - 2 <= len(objects) <= spec.max_objects  # a few hidden
        areas += [o["area"] for o in objects]
    counts = bucket_counts(areas, 128)
    shares = {k: v / len(areas) for k, v in counts.items()}
    # The docstring's "a fifth small, half medium, the rest large", with sampling slack.
    assert 0.14 <= shares["small"] <= 0.26, shares
    assert 0.42 <= shares["medium"] <= 0.62, shares
    assert 0.2 <= shares["large"] <= 0.36, shares
    # Log-uniform sizes: the default setting has no small objects at all.
    rng = np.random.default_rng(0)
    default = [o["area"] for _ in range(60) for o in render_image(rng, ShapesSpec(size=128))[1]]
    assert bucket_counts(default, 128)["small"] == 0


def test_zoo_shapes_multi_size_is_the_api_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--num-train", "2", "--num-val", "1", "--seed", "4", "--multi-size"]
    assert cli_main(["shapes", str(tmp_path / "cli"), *args]) == 0
    # It says which thresholds to evaluate with: COCO's over 25 at 128 px.
    assert "--area-thresholds 40.96 368.64" in capsys.readouterr().out
    generate(tmp_path / "api", 2, 1, seed=4, spec=ShapesSpec.multi_size(128))
    assert _files(tmp_path / "cli") == _files(tmp_path / "api")
    assert cli_main(["shapes", str(tmp_path / "bad"), "--multi-size", "--max-objects", "1"]) == 1
