"""The dataset validator: every problem reported with its id before training starts;
errors stop the run, fixable boxes are clipped or dropped with a warning and counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from support.shapes import shapes_data

from zoo.cli import main
from zoo.data import CocoDetection, ResizeRecipe, eval_transforms
from zoo.data.validate import SHOWN, DatasetError, validate_coco

SIZE = 64  # shapes_data's image side


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return shapes_data(tmp_path / "data", num_train=6, num_val=2)


def _edit(data: Path, split: str = "train") -> tuple[dict[str, Any], Path]:
    path = data / "annotations" / f"{split}.json"
    return json.loads(path.read_text()), path


def _found(report: Any) -> set[tuple[str, str]]:
    return {(p.kind, p.where) for p in report.errors}


def test_a_clean_dataset_passes(data: Path) -> None:
    report = validate_coco(data / "annotations" / "train.json", data / "train")
    assert report.errors == [] and report.fixes == []
    coco, _ = _edit(data)
    assert report.dataset == coco


def test_every_error_is_named(data: Path) -> None:
    coco, path = _edit(data)
    coco["images"][0]["file_name"] = "missing.png"
    broken = data / "train" / coco["images"][1]["file_name"]
    broken.write_bytes(broken.read_bytes()[:100])  # a truncated PNG
    coco["images"][2]["width"] = SIZE * 2  # the file says otherwise
    coco["images"].append({"id": 1, "file_name": "000004.png"})  # id used twice
    anns = coco["annotations"]
    anns[0]["category_id"] = 42
    anns[1]["image_id"] = 99
    anns[2]["bbox"] = [1, 2, 3]
    anns[3]["iscrowd"] = 7
    anns.append(dict(anns[4]))  # id used twice
    coco["categories"][0].pop("name")
    path.write_text(json.dumps(coco))
    report = validate_coco(path, data / "train")
    assert _found(report) == {
        ("missing-file", "image 1"),
        ("unreadable-file", "image 2"),
        ("size-mismatch", "image 3"),
        ("duplicate-id", "image 1"),
        ("unknown-category", f"annotation {anns[0]['id']}"),
        ("unknown-image", f"annotation {anns[1]['id']}"),
        ("bad-annotation", f"annotation {anns[2]['id']}"),
        ("bad-annotation", f"annotation {anns[3]['id']}"),
        ("duplicate-id", f"annotation {anns[4]['id']}"),
        ("bad-category", "category 1"),
    }
    message = {str(p) for p in report.errors}
    assert f"image 1: {data / 'train' / 'missing.png'} does not exist" in message
    assert f"image 3: 000003.png is {SIZE}x{SIZE} pixels, the annotation says 128x64" in message
    with pytest.raises(DatasetError) as info:
        report.raise_for_errors()
    assert len(info.value.problems) == 10
    assert str(info.value).startswith(f"{path}: 10 problems to fix")


@pytest.mark.parametrize(
    ("change", "kind", "where"),
    [
        (lambda c: c.update(images=[]), "no-images", "images"),
        (lambda c: c.update(categories=[]), "no-categories", "categories"),
        (lambda c: c.pop("annotations"), "missing-key", "annotations"),
        (lambda c: c.update(images={"id": 1}), "missing-key", "images"),
    ],
    ids=["no images", "no categories", "no annotations key", "images not a list"],
)
def test_empty_or_missing_parts_are_errors(data: Path, change: Any, kind: str, where: str) -> None:
    coco, path = _edit(data)
    change(coco)
    path.write_text(json.dumps(coco))
    assert (kind, where) in _found(validate_coco(path, data / "train"))


def test_unreadable_annotation_files(tmp_path: Path) -> None:
    for text, expected in [("{oops", "cannot be read"), ("[1, 2]", "is a list, not an object")]:
        (tmp_path / "a.json").write_text(text)
        (problem,) = validate_coco(tmp_path / "a.json").errors
        assert problem.kind == "unreadable-json" and expected in problem.message
    (problem,) = validate_coco(tmp_path / "none.json").errors
    assert "No such file" in problem.message


def test_long_lists_are_capped(data: Path) -> None:
    coco, path = _edit(data)
    for ann in coco["annotations"]:
        ann["category_id"] = 0
    extra = [{**coco["annotations"][0], "id": 1000 + i} for i in range(SHOWN + 5)]
    coco["annotations"] += extra
    path.write_text(json.dumps(coco))
    with pytest.raises(DatasetError) as info:
        validate_coco(path, data / "train").raise_for_errors()
    total = len(coco["annotations"])
    assert len(info.value.problems) == total
    assert str(info.value).count("\n  annotation") == SHOWN
    assert str(info.value).endswith(f"... and {total - SHOWN} more")


def test_bad_boxes_are_fixed_with_counts(data: Path) -> None:
    coco, path = _edit(data)
    anns = coco["annotations"]
    image_of = {im["id"]: im for im in coco["images"]}
    anns[0]["bbox"] = [float("nan"), 1, 2, 3]
    anns[1]["bbox"] = [1, 1, 0, 3]
    anns[2]["bbox"] = [1, 1, 4, -3]
    anns[3]["bbox"] = [SIZE + 1, 0, 5, 5]  # right of the image
    anns[4]["bbox"] = [-4, 10, 14, 60]  # left part and bottom part outside
    anns[5].pop("area")
    path.write_text(json.dumps(coco, allow_nan=True))
    assert all(image_of[a["image_id"]]["width"] == SIZE for a in anns)
    report = validate_coco(path, data / "train")
    assert report.errors == []
    ids = [a["id"] for a in anns]
    assert {(p.kind, p.where) for p in report.fixes} == {
        ("dropped non-finite box", f"annotation {ids[0]}"),
        ("dropped empty box", f"annotation {ids[1]}"),
        ("dropped empty box", f"annotation {ids[2]}"),
        ("dropped box outside its image", f"annotation {ids[3]}"),
        ("clipped box", f"annotation {ids[4]}"),
        ("set area", f"annotation {ids[5]}"),
    }
    assert report.dataset is not None
    kept = {a["id"]: a for a in report.dataset["annotations"]}
    assert sorted(kept) == sorted(ids[4:])
    assert kept[ids[4]]["bbox"] == [0, 10, 10, 54]  # x 0..10, y 10..64
    _, _, w, h = anns[5]["bbox"]
    assert kept[ids[5]]["area"] == w * h
    with pytest.warns(
        UserWarning,
        match=r"1 clipped box, 1 dropped box outside its image, 2 dropped empty box, 1 dropped non-finite box, 1 set area",
    ):
        dataset = CocoDetection(
            data / "train", path, eval_transforms(ResizeRecipe.for_image_size(SIZE))
        )
    # The dataset serves the clipped box (normalised cxcywh of x 0..10, y 10..64).
    index = dataset.ids.index(anns[4]["image_id"])
    boxes = dataset[index][1]["boxes"]
    expected = torch.tensor([5 / SIZE, 37 / SIZE, 10 / SIZE, 54 / SIZE])
    assert any(torch.allclose(b, expected, atol=1e-6) for b in boxes)


def test_training_stops_before_step_one(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coco, path = _edit(data)
    coco["annotations"][0]["category_id"] = 42
    path.write_text(json.dumps(coco))
    val, val_path = _edit(data, "val")
    val["images"][0]["file_name"] = "gone.png"
    val_path.write_text(json.dumps(val))
    out = tmp_path / "run"
    argv = ["train", "--model", "ddetr", "--data", str(data), "--out", str(out), "--workers", "0"]
    # Without --debug: exit 1 and every problem on stderr, each with its id.
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 problems" in err and "annotation" in err and "gone.png" in err
    with pytest.raises(DatasetError) as info:
        main([*argv, "--debug"])
    # Both splits' problems in one message, before anything was written.
    assert {(p.kind, p.where) for p in info.value.problems} == {
        ("unknown-category", f"train.json annotation {coco['annotations'][0]['id']}"),
        ("missing-file", "val.json image 1"),
    }
    assert not out.exists()
    with pytest.raises(DatasetError, match=r"gone\.png does not exist"):
        main(["eval", "--model", "ddetr", "--data", str(data), "--workers", "0", "--debug"])


def test_no_images_does_not_train_zero_steps(data: Path, tmp_path: Path) -> None:
    coco, path = _edit(data)
    path.write_text(json.dumps({**coco, "images": [], "annotations": []}))
    argv = ["train", "--model", "ddetr", "--data", str(data), "--out", str(tmp_path / "run")]
    with pytest.raises(DatasetError, match="images: is empty"):
        main([*argv, "--eval-every", "0", "--debug"])
