"""The ``zoo`` command line: ``python -m zoo train|eval ...``.

Datasets are folders in COCO layout (see :func:`zoo.data.coco.split_paths`)::

    DATA/annotations/train.json  DATA/train/*.png      (or instances_train2017.json + train2017/)
    DATA/annotations/val.json    DATA/val/*.png        (or instances_val2017.json + val2017/)

``python -m zoo shapes DATA`` (or ``python -m zoo.data.shapes DATA``) writes a synthetic one.

Examples::

    python -m zoo train --model ddetr --data DATA --out runs/x --epochs 50 \\
        --overrides depth=18 hidden_dim=128
    torchrun --nproc-per-node 4 -m zoo train --model ddetr-refine --data DATA --amp bf16
    python -m zoo train --model ddetr --data DATA --resume runs/x
    python -m zoo eval --model runs/x --data DATA

Subcommands register themselves with :func:`command`; add one by decorating a function
that declares its arguments and returns the function running it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from zoo.models.config import ModelConfig

Runner = Callable[[argparse.Namespace], int]
Declare = Callable[[argparse.ArgumentParser], Runner]
_COMMANDS: dict[str, tuple[str, Declare]] = {}


def command(name: str, help: str) -> Callable[[Declare], Declare]:
    """Register subcommand ``name``: the decorated function adds its arguments to the
    parser it is given and returns the function that runs the command."""

    def decorator(declare: Declare) -> Declare:
        if name in _COMMANDS:
            raise ValueError(f"command {name!r} is already registered")
        _COMMANDS[name] = (help, declare)
        return declare

    return decorator


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["hidden_dim=64", "train_backbone=false"]`` -> ``{"hidden_dim": 64, "train_backbone": False}``.

    Values are read as JSON when they parse (numbers, true/false, null), else as strings.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"override {pair!r} is not key=value")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="dataset folder in COCO layout")
    parser.add_argument("--batch-size", type=int, default=2, help="images per process")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="largest shorter side (default: train 800 as the official recipe; "
        "eval the model's own image_size)",
    )
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="mixed precision")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes")
    parser.add_argument(
        "--overrides", nargs="*", default=[], metavar="KEY=VALUE", help="model configuration fields"
    )


@command("train", help="train or fine-tune a model on a COCO-layout dataset")
def _declare_train(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("--model", required=True, help="variant name (see zoo.list_variants())")
    _add_data_args(parser)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/MODEL)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lr-backbone", type=float, default=2e-5)
    parser.add_argument("--lr-drop", type=int, default=40, help="epochs between 10x decays")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--clip-max-norm", type=float, default=0.1)
    parser.add_argument("--num-classes", type=int, default=None, help="default: the dataset's")
    parser.add_argument(
        "--init",
        default=None,
        help="fine-tune from weights: a name (official weights), Hub id, folder, .pth, "
        "or a training checkpoint / output folder",
    )
    parser.add_argument("--resume", type=Path, default=None, help="a checkpoint or output folder")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=0, help="steps (0: each epoch)")
    parser.add_argument("--eval-every", type=int, default=1, help="epochs (0: never)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--tensorboard", action="store_true", help="also log to OUT/tensorboard (needs tensorboard)"
    )
    return _run_train


def _checkpoint_or_name(source: str | Path) -> str | Path:
    """A training checkpoint folder when ``source`` names one (or a run's output folder)."""
    from zoo.training.checkpoint import resolve_checkpoint

    try:
        return resolve_checkpoint(source)
    except FileNotFoundError:
        return source


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
        return zoo.load(_checkpoint_or_name(args.resume))
    if args.init is not None:
        # zoo.load re-creates the class heads when num_classes differs from the weights'.
        return zoo.load(_checkpoint_or_name(args.init), num_classes=num_classes, **overrides)
    return zoo.create_model(args.model, num_classes=num_classes, **overrides)


def _run_train(args: argparse.Namespace) -> int:
    import torch

    import zoo
    from zoo.data import CocoDetection, ResizeRecipe, eval_transforms, split_paths, train_transforms
    from zoo.data.coco import category_names, load_coco
    from zoo.training import TrainConfig, Trainer, init_distributed

    info = init_distributed()
    if args.image_size is None:
        args.image_size = 800
    torch.manual_seed(args.seed)  # the same initial weights in every process
    train_images, train_ann = split_paths(args.data, "train")
    coco = load_coco(train_ann)
    num_classes = args.num_classes or len(coco.cats)
    model = _build_model(args, num_classes, category_names(coco, num_classes))
    num_classes = model.config.num_classes
    recipe = ResizeRecipe.for_image_size(args.image_size)
    train_set = CocoDetection(
        train_images, train_ann, train_transforms(recipe), num_classes, seed=args.seed
    )
    val_set = None
    if args.eval_every:
        val_images, val_ann = split_paths(args.data, "val")
        val_set = CocoDetection(val_images, val_ann, eval_transforms(recipe), num_classes)
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
        progress=not args.no_progress,
        tensorboard=args.tensorboard,
    )
    out = args.out or Path("runs") / args.model
    trainer = Trainer(
        model, zoo.build_criterion(model.config), train_set, config, out, val_set, info
    )
    if args.resume is not None:
        trainer.resume(args.resume)
    metrics = trainer.fit()
    if info.is_main:
        print(json.dumps({"out": str(out), "step": trainer.step, "metrics": metrics}))
    return 0


@command("eval", help="COCO box AP of a model on a COCO-layout dataset")
def _declare_eval(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument(
        "--model",
        required=True,
        help="a name (official weights), Hub id, folder or .pth (see zoo.load), "
        "or a training checkpoint / output folder",
    )
    _add_data_args(parser)
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", type=Path, default=None, help="also write the metrics here (JSON)")
    return _run_eval


def _run_eval(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    import zoo
    from zoo.data import CocoDetection, ResizeRecipe, collate, eval_transforms, split_paths
    from zoo.data.coco_eval import evaluate
    from zoo.training import init_distributed
    from zoo.training.distributed import ShardSampler

    info = init_distributed()
    model = zoo.load(_checkpoint_or_name(args.model), **parse_overrides(args.overrides))
    model.to(info.device)
    images, ann = split_paths(args.data, args.split)
    config = cast("ModelConfig", model.config)
    recipe = ResizeRecipe.for_image_size(args.image_size or config.image_size)
    dataset = CocoDetection(images, ann, eval_transforms(recipe), config.num_classes)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=ShardSampler(len(dataset), info),
        collate_fn=collate,
        num_workers=args.workers,
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp or "")
    metrics = evaluate(model, loader, dataset.coco, dataset.label_to_category, info.device, dtype)
    if info.is_main:
        print(json.dumps(metrics))
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(metrics, indent=1))
    return 0


@command("shapes", help="write a synthetic COCO-format dataset of shapes")
def _declare_shapes(parser: argparse.ArgumentParser) -> Runner:
    from zoo.data import shapes

    shapes.add_arguments(parser)
    return shapes.run


def _register_model_commands() -> None:
    """``list``, ``detect`` and ``convert`` (:mod:`zoo.cli.models`) follow the same convention."""
    from zoo.cli.models import COMMANDS

    for name, help_text, declare in COMMANDS:
        if name not in _COMMANDS:
            command(name, help=help_text)(declare)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    _register_model_commands()
    parser = argparse.ArgumentParser(prog="zoo", description="DETR and Deformable DETR model zoo")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, declare) in _COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(run=declare(sub_parser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m zoo`` (and of a ``zoo`` console script)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
