"""COCO box evaluation: predictions -> COCO results JSON -> pycocotools ``COCOeval``.

Under ``torch.distributed`` every rank predicts its share of the images; the results
are gathered on rank 0, evaluated there once, and the metrics sent back to every rank.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn

from zoo.data.areas import COCO_AREA_THRESHOLDS, check_area_thresholds
from zoo.data.batching import DetectionBatch
from zoo.models.pipeline.detector import Detector
from zoo.models.pipeline.postprocess import Predictions

# The first six numbers of COCOeval.stats, in its order.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# pycocotools' score of an area range without ground truth (kept in the metrics dict).
NO_OBJECTS = -1.0
_AREA = {"all": "", "small": "small ", "medium": "medium ", "large": "large "}
_ROW = re.compile(r"^ Average (Precision|Recall) .*\| area=\s*(\w+) .*= (-?\d+\.\d+)$")


def format_metric(value: float, name: str = "AP") -> str:
    """``0.1234``, or ``n/a (no large objects)`` for pycocotools' -1 (the area range of the
    metric ``name``, ``APl`` here, holds no ground-truth object)."""
    if value == NO_OBJECTS:
        area = {"s": "small ", "m": "medium ", "l": "large "}.get(name[-1:], "")
        return f"n/a (no {area}objects)"
    return f"{value:.4f}"


def summary_table(printed: str) -> str:
    """The summary rows of what pycocotools printed (its progress lines left out), a -1
    replaced by ``n/a (no AREA objects)``."""
    rows = []
    for line in printed.splitlines():
        found = _ROW.match(line)
        if found is None:
            continue
        if float(found.group(3)) == NO_OBJECTS:
            area = found.group(2)
            line = line[: found.start(3)] + f"n/a (no {_AREA.get(area, '')}objects)"
        rows.append(line)
    return "\n".join(rows)


def to_coco_results(
    predictions: Mapping[int, Predictions], label_to_category: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO detection results from per-image predictions.

    Args:
        predictions: image id -> ``boxes`` (K, 4) xyxy in pixels of the original
            image, ``scores`` (K,), ``labels`` (K,) model labels.
        label_to_category: the COCO category id of each model label.

    Returns:
        One ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per box.
    """
    results = []
    for image_id, pred in predictions.items():
        boxes = pred["boxes"].detach().float().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        scores = pred["scores"].detach().float().cpu().tolist()
        labels = pred["labels"].detach().cpu().tolist()
        for box, score, label in zip(xywh, scores, labels, strict=True):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(label_to_category[label]),
                    "bbox": [round(v, 3) for v in box],
                    "score": round(float(score), 5),
                }
            )
    return results


def gather_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's results concatenated (on every rank); the input itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return results
    parts: list[list[dict[str, Any]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, results)
    return [r for part in parts for r in part or []]


def coco_metrics(
    coco_gt: COCO,
    results: list[dict[str, Any]],
    verbose: bool = False,
    area_thresholds: Sequence[float] = COCO_AREA_THRESHOLDS,
) -> dict[str, float]:
    """``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` of ``results`` against ``coco_gt``.

    An area range without ground truth scores -1 (:data:`NO_OBJECTS`), as in pycocotools;
    no results at all score 0. ``verbose`` prints pycocotools' summary table (without its
    progress lines; a -1 shown as ``n/a (no large objects)``). ``area_thresholds``
    (small, medium) bound the APs/APm/APl buckets in pixels of area: COCO's 32^2 and
    96^2 by default; images much smaller than COCO's want them scaled
    (:func:`zoo.data.areas.size_buckets`).
    """
    small, medium = check_area_thresholds(area_thresholds)
    if not results:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        # Same order and labels as pycocotools' default (all, small, medium, large).
        evaluator.params.areaRng = [[0.0, 1e10], [0.0, small], [small, medium], [medium, 1e10]]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if verbose:
        print(summary_table(printed.getvalue()))
    return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats[:6], strict=True)}


def _float_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    # Post-processing under bf16/fp16 would round the scores that rank detections.
    return {k: v.float() if isinstance(v, Tensor) else v for k, v in outputs.items()}


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[DetectionBatch],
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> dict[int, Predictions]:
    """Run ``model`` over ``batches``: image id -> predictions in original-image pixels.

    Boxes are normalised to the resized, unpadded image, which keeps the original's
    aspect ratio, so scaling them by ``orig_size`` gives original pixels.
    """
    device = torch.device(device)
    detector = cast(Detector, getattr(model, "module", model))  # unwrap DistributedDataParallel
    was_training = detector.training
    detector.eval()
    predictions: dict[int, Predictions] = {}
    try:
        for batch in batches:
            batch = batch.to(device)
            with torch.autocast(
                device.type, autocast_dtype or torch.float32, enabled=autocast_dtype is not None
            ):
                outputs = detector(batch.pixel_values, batch.pixel_mask)
            sizes = torch.stack([t["orig_size"] for t in batch.targets])
            # Threshold 0: COCO AP ranks every detection, low scores included.
            preds = detector.postprocess(_float_outputs(outputs), sizes, 0.0)
            for target, pred in zip(batch.targets, preds, strict=True):
                predictions[int(target["image_id"])] = pred
    finally:
        detector.train(was_training)
    return predictions


def evaluate(
    model: nn.Module,
    batches: Iterable[DetectionBatch],
    coco_gt: COCO,
    label_to_category: Sequence[int],
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    verbose: bool = False,
    area_thresholds: Sequence[float] = COCO_AREA_THRESHOLDS,
) -> dict[str, float]:
    """COCO box metrics of ``model`` on ``batches`` (this rank's share when distributed).

    Every rank must call this; each gets the same metrics back. ``area_thresholds``: see
    :func:`coco_metrics`.
    """
    predictions = predict_batches(model, batches, device, autocast_dtype)
    results = gather_results(to_coco_results(predictions, label_to_category))
    distributed = dist.is_available() and dist.is_initialized()
    metrics: dict[str, float] | None = None
    if not distributed or dist.get_rank() == 0:
        metrics = coco_metrics(coco_gt, results, verbose, area_thresholds)
    if distributed:
        box: list[dict[str, float] | None] = [metrics]
        dist.broadcast_object_list(box, src=0)
        metrics = box[0]
    assert metrics is not None
    return metrics
