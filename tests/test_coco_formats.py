"""COCO formats: boxes clipped to the image, ``zoo detect --format coco`` results that
pycocotools reads with the dataset's ids, ``zoo eval``'s summary table and saved detections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from zoo.cli import main as run
from zoo.data.shapes import ShapesSpec, generate
from zoo.detect.coco_results import CocoCategories, default_label_to_category, image_id
from zoo.models.pipeline.postprocess import clip_boxes, postprocess_topk


def test_clip_boxes_by_hand() -> None:
    boxes = torch.tensor([[[-8.36, 3.0, 521.0, 40.0], [10.0, -1.0, 20.0, 700.0]]])
    sizes = torch.tensor([[512, 300]])  # (H, W)
    want = torch.tensor([[[0.0, 3.0, 300.0, 40.0], [10.0, 0.0, 20.0, 512.0]]])
    torch.testing.assert_close(clip_boxes(boxes, sizes), want)


def test_postprocessed_boxes_stay_inside_the_image() -> None:
    # A box centred on the corner, wider than the image.
    outputs = {
        "pred_logits": torch.tensor([[[3.0, -3.0]]]),
        "pred_boxes": torch.tensor([[[0.0, 1.0, 1.5, 0.5]]]),
    }
    (pred,) = postprocess_topk(outputs, torch.tensor([[100, 200]]), k=1)
    torch.testing.assert_close(pred["boxes"], torch.tensor([[0.0, 75.0, 150.0, 100.0]]))


def test_category_and_image_ids(tmp_path: Path) -> None:
    ann = {
        "images": [{"id": 42, "file_name": "sub/a.png"}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    cats = CocoCategories.from_file(tmp_path / "ann.json")
    assert cats.label_to_category(["dog", "cat", "N/A"]) == [3, 7, None]
    with pytest.raises(ValueError, match="'bird'"):
        cats.label_to_category(["bird"])
    assert image_id("x/a.png", 5, cats.images) == 42
    assert image_id("000000397133.jpg", 5, {}) == 397133
    assert image_id("photo.jpg", 5, {}) == 5
    assert default_label_to_category(["a", "b"]) == [1, 2]
    coco91 = ["N/A", "person", *["x"] * 89]
    assert default_label_to_category(coco91)[:3] == [None, 1, 2]


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Category ids as written by zoo.data.shapes; the images are the demo model's kind.
    return generate(tmp_path_factory.mktemp("shapes"), 1, 6, seed=11, spec=ShapesSpec(size=128))


def test_detect_coco_results_read_by_pycocotools(
    shapes_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ann = shapes_data / "annotations" / "val.json"
    args = ["detect", str(shapes_data / "val"), "--model", "shapes-demo", "--out", str(tmp_path)]
    assert run([*args, "--format", "coco", "--categories", str(ann), "--threshold", "0.05"]) == 0
    capsys.readouterr()
    results = json.loads((tmp_path / "coco_results.json").read_text())
    gt = COCO(str(ann))
    # Every result names an image and a category of the dataset, with a clipped xywh box.
    for r in results:
        image = gt.imgs[r["image_id"]]
        x, y, w, h = r["bbox"]
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0
        assert x + w <= image["width"] + 1e-3 and y + h <= image["height"] + 1e-3
        assert r["category_id"] in gt.cats
    # The same detections as the zoo-format JSON, converted by hand.
    record = json.loads((tmp_path / f"{Path(gt.imgs[1]['file_name']).stem}.json").read_text())
    mine = sorted(
        (round(d["box"][0], 3), round(d["box"][2] - d["box"][0], 3)) for d in record["detections"]
    )
    theirs = sorted((r["bbox"][0], r["bbox"][2]) for r in results if r["image_id"] == 1)
    assert len(theirs) == len(mine)
    for a, b in zip(theirs, mine, strict=True):
        assert a == pytest.approx(b, abs=2e-3)
    # The bundled model detects these shapes: pycocotools scores the results well.
    evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[1] > 0.7  # AP50


def test_eval_prints_the_summary_table_and_saves_detections(
    shapes_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "dets.json"
    args = ["eval", "--model", "shapes-demo", "--data", str(shapes_data), "--workers", "0"]
    assert run([*args, "--save-detections", str(saved)]) == 0
    out = capsys.readouterr().out
    assert out.count("Average Precision") == 6 and out.count("Average Recall") == 6
    assert "maxDets=100" in out and "area= large" in out
    metrics = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    # Evaluating the saved file again gives the printed AP: the file is what was scored.
    gt = COCO(str(shapes_data / "annotations" / "val.json"))
    evaluator = COCOeval(gt, gt.loadRes(str(saved)), iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(metrics["AP"], abs=1e-9)


def test_zoo_eval_area_thresholds_move_the_buckets(
    shapes_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["eval", "--model", "shapes-demo", "--data", str(shapes_data), "--workers", "0"]
    # Thresholds below every object's area: all objects are large, APl is AP.
    assert run([*args, "--area-thresholds", "0.001", "0.002"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert metrics["APl"] == pytest.approx(metrics["AP"]) and metrics["AP"] > 0
    assert metrics["APs"] == -1.0 and metrics["APm"] == -1.0


@pytest.mark.parametrize("bad", [["9216", "1024"], ["0", "5"], ["1", "nan"]])
def test_zoo_eval_bad_area_thresholds_exit_2(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["eval", "--model", "shapes-demo", "--data", "x", "--area-thresholds", *bad])
    assert exit_info.value.code == 2
    assert "--area-thresholds: area_thresholds must satisfy" in capsys.readouterr().err
