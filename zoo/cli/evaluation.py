"""The ``eval`` command: COCO box AP of a model on a COCO-layout dataset::

    python -m zoo eval --model runs/x --data DATA            # a training run's latest checkpoint
    python -m zoo eval --model shapes-demo --data DATA       # any model zoo.load takes

It prints one line of what it evaluates (model, checkpoint step, data, image count), then
pycocotools' summary table without its progress lines; a metric whose area range holds
no ground-truth object reads ``n/a (no large objects)`` there, and -1 in the JSON (as
pycocotools gives it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from zoo.cli.args import Runner, add_data_args, local_or_hub, parse_overrides

if TYPE_CHECKING:
    from zoo.models.config import ModelConfig


def declare_eval(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument(
        "--model",
        required=True,
        help="a name (official weights), Hub id, folder or .pth (see zoo.load), "
        "or a training checkpoint / output folder",
    )
    add_data_args(parser)
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the metrics here (JSON; -1 where an area range has no ground-truth "
        "object, as pycocotools gives it: printed as n/a)",
    )
    parser.add_argument(
        "--save-detections",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the detections as COCO results JSON (image_id, category_id, bbox xywh, score)",
    )
    return _run_eval


def _run_eval(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    import zoo
    from zoo.data import CocoDetection, ResizeRecipe, collate, eval_transforms, split_paths
    from zoo.data.coco_eval import coco_metrics, gather_results, predict_batches, to_coco_results
    from zoo.data.validate import check_splits
    from zoo.training import init_distributed
    from zoo.training.distributed import ShardSampler

    info = init_distributed()
    images, ann = split_paths(args.data, args.split)
    (checked,) = check_splits([(images, ann)])  # before the model: data errors come first
    model = zoo.load(local_or_hub(args.model), **parse_overrides(args.overrides))
    model.to(info.device)
    config = cast("ModelConfig", model.config)
    recipe = ResizeRecipe.for_image_size(args.image_size or config.image_size)
    transforms = eval_transforms(recipe, config.image_mean, config.image_std)
    dataset = CocoDetection(images, ann, transforms, config.num_classes, dataset=checked)
    if info.is_main:
        print(_eval_line(args, model, len(dataset), args.image_size or config.image_size))
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=ShardSampler(len(dataset), info),
        collate_fn=collate,
        num_workers=args.workers,
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp or "")
    predictions = predict_batches(model, loader, info.device, dtype)
    # Collective under torch.distributed: every rank sends its share.
    results = gather_results(to_coco_results(predictions, dataset.label_to_category))
    if info.is_main:
        # pycocotools' standard summary table (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l).
        metrics = coco_metrics(
            dataset.coco, results, verbose=True, area_thresholds=args.area_thresholds
        )
        print(json.dumps(metrics))
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(metrics, indent=1))
        if args.save_detections is not None:
            args.save_detections.parent.mkdir(parents=True, exist_ok=True)
            args.save_detections.write_text(json.dumps(results) + "\n")
            print(f"{len(results)} detections (COCO results) -> {args.save_detections}")
    return 0


def _eval_line(args: argparse.Namespace, model: Any, num_images: int, size: Any) -> str:
    """What ``zoo eval`` evaluates: the model (and its checkpoint's step), data, images."""
    import re

    source = getattr(model, "source", None) or str(args.model)
    step = re.fullmatch(r"step-(\d+)", Path(str(source)).name)
    trained = f" (checkpoint at step {int(step.group(1))})" if step else ""
    return (
        f"evaluating {source}{trained} ({type(model).__name__}, {model.config.num_classes} "
        f"classes) on {args.data} split {args.split}: {num_images} images, image size {size}"
    )
