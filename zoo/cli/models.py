"""The ``list``, ``detect`` and ``convert`` subcommands of the ``zoo`` command line.

Each command is a ``declare_*`` function that adds its arguments to a parser and
returns the function running it (the convention of :mod:`zoo.cli`), plus an
``add_*_parser(subparsers)`` form that sets ``func`` for plain argparse users::

    python -m zoo list
    python -m zoo detect photos/ street.jpg --model ddetr-two-stage --out results
    python -m zoo detect photos/*.jpg --model ddetr --out results --show-sampling
    python -m zoo convert r50_deformable_detr-checkpoint.pth my-ddetr
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

Runner = Callable[[argparse.Namespace], int]


def declare_list(parser: argparse.ArgumentParser) -> Runner:
    """``zoo list``: the named models, their checkpoints and published COCO AP."""
    return run_list


def run_list(args: argparse.Namespace) -> int:
    """Print a table of :func:`zoo.list_models`."""
    import zoo

    header = ("name", "Hub repository", "revision", "COCO AP", "params", "license")
    rows = [
        (
            r.name,
            r.repo_id or "-",
            r.revision[:12] if r.revision else "main (not pinned)",
            f"{r.coco_ap:.1f}" if r.coco_ap is not None else "-",
            f"{r.num_params / 1e6:.1f}M",
            r.license or "-",
        )
        for r in zoo.list_models()
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def declare_detect(parser: argparse.ArgumentParser) -> Runner:
    """``zoo detect IMAGES... --model M --out DIR``: draw and list detections."""
    parser.add_argument("images", nargs="+", help="image files, folders or globs")
    parser.add_argument(
        "--model", required=True, help="a name (zoo list), Hub repo, folder or .pth"
    )
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    parser.add_argument("--threshold", type=float, default=0.5, help="minimum score drawn")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="shorter side the model sees (default: the model's own, 800 for COCO models)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for pictures and JSON")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None, help="default: cuda when there is a GPU")
    parser.add_argument(
        "--show-sampling",
        action="store_true",
        help="also draw the deformable sampling points of the top detections (Deformable DETR)",
    )
    parser.add_argument(
        "--top-k", type=int, default=5, help="detections shown with --show-sampling"
    )
    parser.add_argument(
        "--one-json", action="store_true", help="write one detections.json for all images"
    )
    return run_detect


def run_detect(args: argparse.Namespace) -> int:
    """Load the model, find the images and run :func:`zoo.detect.files.detect_files`."""
    import torch

    import zoo
    from zoo.detect.files import detect_files, find_images, supports_sampling

    paths = find_images(args.images)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = zoo.load(args.model, revision=args.revision, device=device)
    if args.show_sampling and not supports_sampling(model):
        print(
            f"zoo detect: --show-sampling needs a Deformable DETR model; {args.model!r} is "
            f"{type(model).__name__}, whose attention is dense (it has no sampling points)",
            file=sys.stderr,
        )
        return 2
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
    print(f"{found} detections in {len(records)} images -> {args.out}")
    return 0


def declare_convert(parser: argparse.ArgumentParser) -> Runner:
    """``zoo convert SRC DST``: an official .pth or transformers folder to the zoo format."""
    parser.add_argument("src", help="official .pth, transformers folder, Hub repo or name")
    parser.add_argument("dst", type=Path, help="folder to write (config.json, model.safetensors)")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="configuration a .pth does not record, e.g. nheads=8 num_queries=300",
    )
    return run_convert


def run_convert(args: argparse.Namespace) -> int:
    """Load ``src`` with :func:`zoo.load` and write it with :func:`zoo.save_pretrained`."""
    import zoo
    from zoo.cli.main import _checkpoint_or_name, parse_overrides

    # A training run's folder converts its latest checkpoint.
    src = _checkpoint_or_name(args.src)
    model = zoo.load(src, revision=args.revision, **parse_overrides(args.overrides))
    zoo.save_pretrained(model, args.dst)
    print(f"{args.src} -> {args.dst} ({model.load_report})")
    return 0


# (name, help, declare) of every command here, for a registry such as zoo.cli's.
COMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], Runner]], ...] = (
    ("list", "list the named models and their checkpoints", declare_list),
    ("detect", "detect objects in images and draw them", declare_detect),
    ("convert", "convert official or transformers weights to the zoo format", declare_convert),
)


def _add(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    help_text, declare = next((h, d) for n, h, d in COMMANDS if n == name)
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=declare(parser))
    return parser


def add_list_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``list`` to ``subparsers``; its ``func`` default runs it."""
    return _add(subparsers, "list")


def add_detect_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``detect`` to ``subparsers``; its ``func`` default runs it."""
    return _add(subparsers, "detect")


def add_convert_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``convert`` to ``subparsers``; its ``func`` default runs it."""
    return _add(subparsers, "convert")
