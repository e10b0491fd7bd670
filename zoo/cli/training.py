"""The ``train``, ``eval`` and ``shapes`` commands: datasets, training and COCO evaluation.

Datasets are folders in COCO layout (see :func:`zoo.data.coco.split_paths`)::

    DATA/annotations/train.json  DATA/train/*.png      (or instances_train2017.json + train2017/)
    DATA/annotations/val.json    DATA/val/*.png        (or instances_val2017.json + val2017/)

Examples::

    python -m zoo shapes DATA                      # a synthetic dataset
    python -m zoo train --model ddetr --data DATA --out runs/x --epochs 50 \\
        --overrides depth=18 hidden_dim=128
    torchrun --nproc-per-node 4 -m zoo train --model ddetr-refine --data DATA --amp bf16
    python -m zoo train --model ddetr --data DATA --resume runs/x
    python -m zoo eval --model runs/x --data DATA

Before anything is built, both splits are validated (:mod:`zoo.data.validate`): errors
stop the command with one message listing them, bad boxes are fixed with a warning. A
run holds ``OUT/.lock`` while it trains (:mod:`zoo.training.lock`): a second run on the
same ``--out`` is refused. ``--resume`` takes the newest intact checkpoint there
(:func:`zoo.training.checkpoint.resolve_checkpoint`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from zoo.cli.args import (
    Runner,
    add_data_args,
    existing_path,
    int_at_least,
    local_or_hub,
    non_negative_float,
    non_negative_int,
    parse_overrides,
    positive_float,
    positive_int,
)

# The smallest image the shapes generator draws recognisable shapes on (pixels).
MIN_SHAPES_SIZE = 16

if TYPE_CHECKING:
    from zoo.models.config import ModelConfig


def declare_train(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("--model", required=True, help="variant name (see zoo.list_variants())")
    add_data_args(parser)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/MODEL)")
    parser.add_argument("--epochs", type=positive_int, default=50)
    parser.add_argument("--lr", type=positive_float, default=2e-4)
    parser.add_argument(
        "--lr-backbone", type=non_negative_float, default=2e-5, help="0: a frozen backbone"
    )
    parser.add_argument(
        "--lr-drop", type=positive_int, default=40, help="epochs between 10x decays"
    )
    parser.add_argument("--weight-decay", type=non_negative_float, default=1e-4)
    parser.add_argument(
        "--clip-max-norm", type=non_negative_float, default=0.1, help="0: no clipping"
    )
    parser.add_argument(
        "--num-classes", type=positive_int, default=None, help="default: the dataset's"
    )
    parser.add_argument(
        "--init",
        default=None,
        help="fine-tune from weights: a name (official weights), Hub id, folder, .pth, "
        "or a training checkpoint / output folder",
    )
    parser.add_argument(
        "--resume", type=existing_path, default=None, help="a checkpoint or output folder"
    )
    parser.add_argument("--max-steps", type=positive_int, default=None)
    parser.add_argument(
        "--checkpoint-every", type=non_negative_int, default=0, help="steps (0: each epoch)"
    )
    parser.add_argument(
        "--keep-checkpoints", type=positive_int, default=2, help="the newest intact ones"
    )
    parser.add_argument("--eval-every", type=non_negative_int, default=1, help="epochs (0: never)")
    parser.add_argument(
        "--log-every",
        type=positive_int,
        default=1,
        help="steps between loss records (the mean since the last): the host reads the "
        "losses only then; on a GPU, a larger value keeps the matcher's transfer the step's "
        "only synchronisation",
    )
    parser.add_argument("--seed", type=non_negative_int, default=42)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--tensorboard", action="store_true", help="also log to OUT/tensorboard (needs tensorboard)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (encoder and decoder as whole graphs) and the loss",
    )
    parser.add_argument(
        "--size-bucket",
        type=non_negative_int,
        default=0,
        help="pad batches to a multiple of this many pixels (static shapes; 0: off)",
    )
    return _run_train


def _build_model(args: argparse.Namespace, num_classes: int, names: tuple[str, ...]) -> Any:
    """The model to train: resumed, fine-tuned from ``--init``, or freshly initialised.

    ``names`` (the dataset's category names) become the model's ``class_names``.
    """
    import zoo

    overrides = {
        "class_names": names,
        "image_size": args.image_size,
        **parse_overrides(args.overrides),
    }
    if args.resume is not None:
        return zoo.load(args.resume)  # a checkpoint folder (see _run_train)
    if args.init is not None:
        # zoo.load re-creates the class heads when num_classes differs from the weights'.
        return zoo.load(local_or_hub(args.init), num_classes=num_classes, **overrides)
    return zoo.create_model(args.model, num_classes=num_classes, **overrides)


def _run_train(args: argparse.Namespace) -> int:
    import torch

    import zoo
    from zoo.data import CocoDetection, ResizeRecipe, eval_transforms, split_paths, train_transforms
    from zoo.data.coco import category_names, load_coco
    from zoo.data.validate import check_splits
    from zoo.training import TrainConfig, Trainer, init_distributed
    from zoo.training.checkpoint import resolve_checkpoint

    info = init_distributed()
    if args.image_size is None:
        args.image_size = 800
    torch.manual_seed(args.seed)  # the same initial weights in every process
    if args.resume is not None:
        # Once: the newest intact checkpoint (with a warning when it had to skip one).
        args.resume = resolve_checkpoint(args.resume)
    # Every problem of both splits, before anything is built or trained.
    splits = [split_paths(args.data, "train")]
    if args.eval_every:
        splits.append(split_paths(args.data, "val"))
    datasets = check_splits(splits)
    (train_images, train_ann), train_dict = splits[0], datasets[0]
    coco = load_coco(train_dict)
    num_classes = args.num_classes or len(coco.cats)
    model = _build_model(args, num_classes, category_names(coco, num_classes))
    model_config = cast("ModelConfig", model.config)
    num_classes = model_config.num_classes
    recipe = ResizeRecipe.for_image_size(args.image_size)
    # The model's own input statistics (ImageNet's for every model trained so far).
    stats = (model_config.image_mean, model_config.image_std)
    train_set = CocoDetection(
        train_images,
        train_ann,
        train_transforms(recipe, *stats),
        num_classes,
        seed=args.seed,
        dataset=train_dict,
    )
    val_set = None
    if args.eval_every:
        (val_images, val_ann), val_dict = splits[1], datasets[1]
        transforms = eval_transforms(recipe, *stats)
        val_set = CocoDetection(val_images, val_ann, transforms, num_classes, dataset=val_dict)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_backbone=args.lr_backbone,
        lr_drop=args.lr_drop,
        weight_decay=args.weight_decay,
        clip_max_norm=args.clip_max_norm,
        amp=args.amp,
        seed=args.seed,
        num_workers=args.workers,
        max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        keep_checkpoints=args.keep_checkpoints,
        log_every=args.log_every,
        compile=args.compile,
        size_bucket=args.size_bucket,
        progress=not args.no_progress,
        tensorboard=args.tensorboard,
        eval_area_thresholds=args.area_thresholds,
    )
    # A resumed run continues in its own folder unless --out says otherwise.
    out = args.out or (
        run_folder(args.resume) if args.resume is not None else Path("runs") / args.model
    )
    trainer = Trainer(
        model, zoo.build_criterion(model.config), train_set, config, out, val_set, info
    )
    if info.is_main:
        print(startup_summary(args, model, len(train_set), val_set, info, out))
    if args.resume is not None:
        trainer.resume(args.resume)
        if info.is_main:
            print(f"resuming from step {trainer.step} (epoch {trainer.epoch + 1}) of {args.resume}")
    metrics = trainer.fit()
    if info.is_main:
        print(json.dumps({"out": str(out), "step": trainer.step, "metrics": metrics}))
    return 0


def run_folder(resume: Path) -> Path:
    """The output folder of the run a checkpoint (or run folder) ``resume`` belongs to."""
    from zoo.training.checkpoint import resolve_checkpoint

    checkpoint = resolve_checkpoint(resume)  # OUT/checkpoints/step-N
    return checkpoint.parents[1] if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def startup_summary(
    args: argparse.Namespace, model: Any, num_train: int, val_set: Any, info: Any, out: Path
) -> str:
    """What ``zoo train`` is about to do: model, size, data, steps, device, output folder."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    per_epoch = -(-num_train // info.world_size) // args.batch_size
    steps = per_epoch * args.epochs
    if args.max_steps is not None:
        steps = min(steps, args.max_steps)
    val = f"{len(val_set)} val images" if val_set is not None else "no evaluation"
    amp = f", {args.amp} autocast" if args.amp else ""
    return (
        f"model: {args.model} ({type(model).__name__}, {params / 1e6:.2f} M parameters, "
        f"{trainable / 1e6:.2f} M trainable, {model.config.num_classes} classes)\n"
        f"data: {args.data} ({num_train} train images, {val}), image size {args.image_size}\n"
        f"steps: {steps} ({per_epoch} per epoch x {args.epochs} epochs, batch "
        f"{args.batch_size} x {info.world_size} processes)\n"
        f"device: {info.device}{amp}; output: {out}"
    )


def declare_eval(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument(
        "--model",
        required=True,
        help="a name (official weights), Hub id, folder or .pth (see zoo.load), "
        "or a training checkpoint / output folder",
    )
    add_data_args(parser)
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", type=Path, default=None, help="also write the metrics here (JSON)")
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


def declare_shapes(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("out", type=Path, help="output folder (COCO layout)")
    parser.add_argument("--num-train", type=positive_int, default=200)
    parser.add_argument("--num-val", type=non_negative_int, default=50)
    parser.add_argument(
        "--size", type=int_at_least(MIN_SHAPES_SIZE), default=128, help="image side in pixels"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--max-objects", type=positive_int, default=None, help="per image (default 5, or 8)"
    )
    parser.add_argument(
        "--multi-size",
        action="store_true",
        help="objects from 4%% to 40%% of the side (log-uniform), 2-8 per image: COCO's "
        "small/medium/large buckets scaled to the image each hold a share (the convergence "
        "benchmark's setting); default: 12-45%%, 1-5 per image (the demo model's)",
    )
    return _run_shapes


def _run_shapes(args: argparse.Namespace) -> int:
    from zoo.data.shapes import ShapesSpec, generate

    spec = ShapesSpec.multi_size(args.size) if args.multi_size else ShapesSpec(size=args.size)
    if args.max_objects is not None:
        # ShapesSpec refuses a maximum under the setting's minimum, naming both.
        spec = dataclasses.replace(spec, max_objects=args.max_objects)
    generate(args.out, args.num_train, args.num_val, seed=args.seed, spec=spec)
    print(f"wrote {args.num_train} train and {args.num_val} val images to {args.out}")
    if args.multi_size:
        from zoo.data.areas import size_buckets

        small, medium = size_buckets(args.size)
        print(
            f"size buckets (COCO's scaled to {args.size} px): small < {small:g}, medium < "
            f"{medium:g} px of area: zoo train/eval --area-thresholds {small:g} {medium:g}"
        )
    return 0
