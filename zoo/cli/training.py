"""The ``train`` and ``shapes`` commands: datasets and training (``eval``: :mod:`zoo.cli.evaluation`).

Datasets are folders in COCO layout (see :func:`zoo.data.coco.split_paths`)::

    DATA/annotations/train.json  DATA/train/*.png      (or instances_train2017.json + train2017/)
    DATA/annotations/val.json    DATA/val/*.png        (or instances_val2017.json + val2017/)

Examples::

    python -m zoo shapes DATA                      # a synthetic dataset
    python -m zoo train --model ddetr --data DATA --out runs/x --epochs 50 \\
        --overrides depth=18 hidden_dim=128
    torchrun --nproc-per-node 4 -m zoo train --model ddetr-refine --data DATA --amp bf16
    python -m zoo train --resume runs/x           # the run's own model, data and options

Before anything is built, both splits are validated (:mod:`zoo.data.validate`): errors
stop the command with one message listing them, bad boxes are fixed with a warning. A
run holds ``OUT/.lock`` while it trains (:mod:`zoo.training.lock`): a second run on the
same ``--out`` is refused, and so is a new run into a folder that holds one
(:mod:`zoo.training.run`; ``--overwrite`` moves the old one aside). ``--resume`` takes
the newest intact checkpoint there (:func:`zoo.training.checkpoint.find_checkpoint`)
and the run's recorded options (:mod:`zoo.cli.run_options`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from zoo.cli.args import (
    MAX_SEED,
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
    seed_int,
)

# The smallest image the shapes generator draws recognisable shapes on (pixels).
MIN_SHAPES_SIZE = 16

if TYPE_CHECKING:
    from zoo.models.config import ModelConfig


def declare_train(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument(
        "--model",
        default=None,
        help="a variant name (zoo list; random weights), or any model zoo.load takes (the "
        "bundled shapes-demo, a Hub id, a folder, a training run): fine-tuned from its "
        "weights as with --init. Not needed with --resume",
    )
    add_data_args(parser, required=False)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default runs/MODEL; with --resume, the run's own). A folder "
        "that holds another run is refused: see --overwrite",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start anew in an --out that holds a run: the old run folder is moved aside "
        "to OUT.replaced-<time> (nothing is deleted)",
    )
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
        help="fine-tune from weights: anything zoo.load takes (a variant name for its "
        "official weights, the bundled shapes-demo, a Hub id, a folder, a .pth) or a "
        "training checkpoint / output folder; the class heads are re-created when the "
        "data has another number of classes",
    )
    parser.add_argument(
        "--resume",
        type=existing_path,
        default=None,
        help="continue the run of this output folder (or checkpoint) with its own model, "
        "data and options; an option given again must agree, but for --epochs, "
        "--max-steps (later ones), --eval-every, --checkpoint-every, --keep-checkpoints, "
        "--workers, --no-progress, --tensorboard",
    )
    parser.add_argument("--max-steps", type=positive_int, default=None)
    parser.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        default=0,
        help="also checkpoint every N steps, besides the checkpoint at each epoch's end "
        "(0: at epoch ends only)",
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
    parser.add_argument("--seed", type=seed_int, default=42, help=f"0 to {MAX_SEED}")
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
    return functools.partial(_run_train, parser=parser)


def _build_model(
    args: argparse.Namespace, overrides: dict[str, Any], num_classes: int, names: tuple[str, ...]
) -> Any:
    """The model to train: resumed, fine-tuned from ``--init`` (or a ``--model`` that is
    not a variant name), or freshly initialised.

    ``names`` (the dataset's category names) become the model's ``class_names``.
    """
    import zoo

    overrides = {"class_names": names, "image_size": args.image_size, **overrides}
    if args.resume is not None:
        return zoo.load(args.resume)  # a checkpoint folder (see _run_train)
    init = args.init
    if init is None and args.model not in zoo.list_variants():
        init = args.model  # shapes-demo, a Hub id, a folder: its weights, as --init
    if init is not None:
        # zoo.load re-creates the class heads when num_classes differs from the weights'.
        return zoo.load(local_or_hub(init), num_classes=num_classes, **overrides)
    return zoo.create_model(args.model, num_classes=num_classes, **overrides)


def _model_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """``--overrides`` for the model; a ``num_classes`` there is ``--num-classes``."""
    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as error:
        parser.error(f"argument --overrides: {error}")
    if "num_classes" in overrides:
        value = overrides.pop("num_classes")
        if type(value) is not int or value < 1:
            parser.error(
                f"argument --overrides: num_classes must be an integer >= 1, got {value!r}"
            )
        if args.num_classes not in (None, value):
            parser.error(
                f"argument --overrides: num_classes={value} disagrees with --num-classes "
                f"{args.num_classes}"
            )
        args.num_classes = value
    return overrides


def _resume_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[str], list[str]]:
    """With ``--resume``: the checkpoint (in ``args.resume``) and the run's options (into
    ``args``); returns why newer checkpoints were skipped and the options changed."""
    from zoo.cli.run_options import restore_options
    from zoo.training.checkpoint import find_checkpoint, read_state

    folder, skipped = find_checkpoint(args.resume)
    state = read_state(folder)
    run = state.get("run")
    stored = run.get("options") if isinstance(run, dict) else None
    changed: list[str] = []
    if isinstance(stored, dict) and stored:
        reached = (int(state["step"]), int(state["epoch"]))
        changed = restore_options(parser, args, stored, folder, reached)
    elif args.model is None or args.data is None:
        parser.error(
            f"the checkpoint {folder} records no options (written by an older version): "
            "give --model, --data and the run's other options again"
        )
    args.resume = folder
    return skipped, changed


def _run_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import torch

    import zoo
    from zoo.cli.run_options import record_options
    from zoo.data import CocoDetection, ResizeRecipe, eval_transforms, split_paths, train_transforms
    from zoo.data.coco import category_names, load_coco
    from zoo.data.validate import check_splits
    from zoo.training import TrainConfig, Trainer, init_distributed
    from zoo.training.run import check_unused, move_aside

    skipped: list[str] = []
    changed: list[str] = []
    if args.resume is not None:
        if args.overwrite:
            parser.error("argument --overwrite: starts a new run, so it does not go with --resume")
        skipped, changed = _resume_options(parser, args)
    elif args.model is None or args.data is None:
        parser.error("the following arguments are required: --model, --data (unless --resume)")
    overrides = _model_overrides(parser, args)
    info = init_distributed()
    if args.image_size is None:
        args.image_size = 800
    # A resumed run continues in its own folder unless --out says otherwise.
    out = args.out or (
        run_folder(args.resume) if args.resume is not None else Path("runs") / args.model
    )
    if args.resume is None:
        if args.overwrite and info.is_main and (aside := move_aside(out)) is not None:
            print(f"moved the run that was in {out} to {aside} (--overwrite)")
        elif not args.overwrite:
            check_unused(out)  # at once, not after the data and the model are ready
    torch.manual_seed(args.seed)  # the same initial weights in every process
    # Every problem of both splits, before anything is built or trained.
    splits = [split_paths(args.data, "train")]
    if args.eval_every:
        splits.append(split_paths(args.data, "val"))
    datasets = check_splits(splits)
    (train_images, train_ann), train_dict = splits[0], datasets[0]
    coco = load_coco(train_dict)
    num_classes = args.num_classes or len(coco.cats)
    model = _build_model(args, overrides, num_classes, category_names(coco, num_classes))
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
    trainer = Trainer(
        model,
        zoo.build_criterion(model.config),
        train_set,
        config,
        out,
        val_set,
        info,
        run_options=record_options(parser, args),
    )
    if info.is_main:
        print(startup_summary(args, model, len(train_set), val_set, info, out))
    if args.resume is not None:
        trainer.resume(args.resume, skipped=skipped)
        for line in changed:
            trainer.event("resume_option", f"resumed with {line}", step=trainer.step)
    metrics = trainer.fit()
    if info.is_main:
        print(json.dumps({"out": str(out), "step": trainer.step, "metrics": metrics}))
    return 0


def run_folder(checkpoint: Path) -> Path:
    """The output folder of the run the checkpoint folder ``checkpoint`` belongs to."""
    # OUT/checkpoints/step-N, or a checkpoint folder of its own
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


def declare_shapes(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("out", type=Path, help="output folder (COCO layout)")
    parser.add_argument("--num-train", type=positive_int, default=200)
    parser.add_argument("--num-val", type=non_negative_int, default=50)
    parser.add_argument(
        "--size", type=int_at_least(MIN_SHAPES_SIZE), default=128, help="image side in pixels"
    )
    parser.add_argument("--seed", type=seed_int, default=0, help=f"0 to {MAX_SEED}")
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
