"""The ``detect`` command: detections on image files, drawn and listed as JSON::

python -m zoo detect photos/ street.jpg --model ddetr-two-stage --out results
python -m zoo detect photos/*.jpg --model ddetr --out results --show-sampling
python -m zoo detect val2017/ --model runs/x --out results --format coco \
    --categories annotations/instances_val2017.json --threshold 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from zoo.cli.args import (
    Runner,
    add_inference_args,
    checkpoint_or_name,
    model_source,
    positive_int,
    probability,
)


def declare_detect(parser: argparse.ArgumentParser) -> Runner:
    """``zoo detect IMAGES... --model M --out DIR``: draw and list detections."""
    parser.add_argument("images", nargs="+", help="image files, folders or globs")
    parser.add_argument(
        "--model",
        required=True,
        type=model_source,
        help="a name (zoo list), Hub repo, folder, .pth, or a training run (latest checkpoint)",
    )
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    parser.add_argument(
        "--threshold", type=probability, default=0.5, help="minimum score drawn, in [0, 1]"
    )
    add_inference_args(parser)
    parser.add_argument("--out", type=Path, required=True, help="folder for pictures and JSON")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="images per batch")
    parser.add_argument(
        "--show-sampling",
        action="store_true",
        help="also draw the deformable sampling points of the top detections (Deformable DETR)",
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=5, help="detections shown with --show-sampling"
    )
    parser.add_argument(
        "--one-json", action="store_true", help="write one detections.json for all images"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when an image could not be read (it is skipped either way)",
    )
    parser.add_argument(
        "--format",
        choices=("zoo", "coco"),
        default="zoo",
        help="coco: also write OUT/coco_results.json (image_id, category_id, bbox xywh, score)",
    )
    parser.add_argument(
        "--categories",
        type=Path,
        default=None,
        help="with --format coco: a COCO annotations file or a JSON list of {id, name}, for "
        "the dataset's category and image ids (default: from the model's class names)",
    )
    return run_detect


def run_detect(args: argparse.Namespace) -> int:
    """Load the model, find the images and run :func:`zoo.detect.files.detect_files`."""
    import torch

    import zoo
    from zoo.detect.files import detect_files, find_images
    from zoo.detect.sampling import supports_sampling

    paths = find_images(args.images)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = zoo.load(checkpoint_or_name(args.model), revision=args.revision, device=device)
    if args.show_sampling and not supports_sampling(model):
        print(
            f"zoo detect: --show-sampling needs a Deformable DETR model; {args.model!r} is "
            f"{type(model).__name__}, whose attention is dense (it has no sampling points)",
            file=sys.stderr,
        )
        return 2
    coco_ids = _coco_ids(args, model) if args.format == "coco" else None
    records = detect_files(
        model,
        paths,
        args.out,
        threshold=args.threshold,
        batch_size=args.batch_size,
        show_sampling=args.show_sampling,
        top_k=args.top_k,
        one_json=args.one_json,
        image_size=args.image_size,
    )
    found = sum(len(r["detections"]) for r in records)
    done = {r["image"] for r in records}
    skipped = [str(p) for p in paths if str(p) not in done]
    print(f"{found} detections in {len(records)} images -> {args.out}")
    if coco_ids is not None:
        from zoo.detect.coco_results import coco_results

        results = coco_results(records, *coco_ids)
        path = args.out / "coco_results.json"
        path.write_text(json.dumps(results) + "\n")
        print(f"{len(results)} COCO results -> {path}")
    if skipped:
        print(
            f"zoo detect: skipped {len(skipped)} of {len(paths)} images that could not be "
            f"read: {', '.join(skipped)}",
            file=sys.stderr,
        )
        return 1 if args.strict else 0
    return 0


def _coco_ids(args: argparse.Namespace, model: Any) -> tuple[list[int | None], dict[str, int]]:
    """The category id of each label and the image ids of ``--categories`` (see
    :mod:`zoo.detect.coco_results`), read before any image is processed."""
    from zoo.detect.coco_results import CocoCategories, default_label_to_category
    from zoo.models.pipeline.coco_names import class_names

    names = class_names(model.config.num_classes, model.config.class_names)
    if args.categories is None:
        return default_label_to_category(names), {}
    categories = CocoCategories.from_file(args.categories)
    return categories.label_to_category(names), categories.images
