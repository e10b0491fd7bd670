"""COCO evaluation: perfect predictions score 1, a known degradation a hand-computed value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zoo.data import CocoDetection, ResizeRecipe, eval_transforms, load_coco
from zoo.data.coco_eval import coco_metrics, to_coco_results
from zoo.data.shapes import generate
from zoo.models.parts.box_ops import scale_boxes
from zoo.training import TrainConfig

# COCOeval interpolates precision at 101 recall points: recall 0..0.5 at precision 1
# and nothing beyond covers 51 of them.
HALF_RECALL_AP = 51 / 101


def test_ground_truth_through_the_pipeline_scores_one(tmp_path: Path) -> None:
    """Targets -> normalised cxcywh (resized) -> original pixels -> COCO JSON: AP = 1."""
    generate(tmp_path, 6, 0, size=80, seed=1)
    ds = CocoDetection(
        tmp_path / "train",
        tmp_path / "annotations" / "train.json",
        eval_transforms(ResizeRecipe(scales=(56,), max_size=100)),
    )
    predictions = {}
    for i in range(len(ds)):
        _, target = ds[i]
        boxes = scale_boxes(target["boxes"][None], target["orig_size"][None])[0]
        predictions[int(target["image_id"])] = {
            "boxes": boxes,
            "scores": torch.ones(len(boxes)),
            "labels": target["labels"],
        }
    results = to_coco_results(predictions, ds.label_to_category)
    metrics = coco_metrics(ds.coco, results)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(1.0)


@pytest.fixture
def two_boxes(tmp_path: Path) -> Path:
    """One 200x200 image, two large (100x100) objects of category 4."""
    coco = {
        "images": [{"id": 1, "file_name": "x.png", "width": 200, "height": 200}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 4,
                "bbox": [0, 0, 100, 100],
                "area": 10000,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 4,
                "bbox": [100, 100, 100, 100],
                "area": 10000,
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 4, "name": "thing"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    return path


def _exact_and_iou_062() -> dict:
    """Predictions for ``two_boxes``: box 1 exactly, box 2 at IoU 0.62 (62 of its 100 rows)."""
    return {
        1: {
            "boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0], [100.0, 100.0, 200.0, 162.0]]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([0, 0]),
        }
    }


def test_one_box_at_iou_062(two_boxes: Path) -> None:
    """Box 1 exact, box 2 at IoU 0.62: a hit for thresholds 0.5-0.6, a miss for the 7 above."""
    gt = load_coco(two_boxes)
    results = to_coco_results(_exact_and_iou_062(), [4])
    assert results[1]["bbox"] == [100.0, 100.0, 100.0, 62.0]
    metrics = coco_metrics(gt, results)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(HALF_RECALL_AP)
    assert metrics["AP"] == pytest.approx((3 * 1.0 + 7 * HALF_RECALL_AP) / 10)
    assert metrics["APl"] == pytest.approx(metrics["AP"])
    assert metrics["APs"] == -1.0 and metrics["APm"] == -1.0


def test_missing_box_and_false_positive_ranked_first(two_boxes: Path) -> None:
    """A confident false positive before the one true positive: precision 1/2 up to recall 1/2."""
    gt = load_coco(two_boxes)
    predictions = {
        1: {
            "boxes": torch.tensor([[150.0, 0.0, 200.0, 50.0], [0.0, 0.0, 100.0, 100.0]]),
            "scores": torch.tensor([0.9, 0.5]),
            "labels": torch.tensor([0, 0]),
        }
    }
    metrics = coco_metrics(gt, to_coco_results(predictions, [4]))
    assert metrics["AP"] == pytest.approx(0.5 * HALF_RECALL_AP)


def test_no_predictions_scores_zero(two_boxes: Path) -> None:
    assert coco_metrics(load_coco(two_boxes), [])["AP"] == 0.0


def test_area_thresholds_move_the_buckets(two_boxes: Path) -> None:
    """Both ground-truth boxes are 10,000 px²: large for COCO, small under (2e4, 5e4)."""
    gt = load_coco(two_boxes)
    results = to_coco_results(_exact_and_iou_062(), [4])
    coco = coco_metrics(gt, results)
    scaled = coco_metrics(gt, results, area_thresholds=(2e4, 5e4))
    assert scaled["APs"] == pytest.approx(coco["APl"]) and scaled["APs"] > 0
    assert scaled["APl"] == -1.0 and scaled["APm"] == -1.0
    # The all-areas figures do not depend on the buckets.
    assert {k: scaled[k] for k in ("AP", "AP50", "AP75")} == {
        k: coco[k] for k in ("AP", "AP50", "AP75")
    }
    # Medium spans 5e3..2e4: both boxes there.
    assert coco_metrics(gt, results, area_thresholds=(5e3, 2e4))["APm"] == pytest.approx(
        coco["APl"]
    )


@pytest.mark.parametrize("bad", [(96.0**2, 32.0**2), (0, 10), (1.0, float("nan")), (1.0,), "ab"])
def test_bad_area_thresholds_are_named(two_boxes: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="area_thresholds"):
        coco_metrics(load_coco(two_boxes), [], area_thresholds=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="area_thresholds"):
        TrainConfig(eval_area_thresholds=bad)  # type: ignore[arg-type]
