"""The ``list`` and ``convert`` commands: the named models, and weights to the zoo format::

python -m zoo list
python -m zoo convert r50_deformable_detr-checkpoint.pth my-ddetr
python -m zoo convert runs/x my-model     # a training run's latest checkpoint
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli.args import Runner, checkpoint_or_name, model_source, parse_overrides


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


def declare_convert(parser: argparse.ArgumentParser) -> Runner:
    """``zoo convert SRC DST``: an official .pth or transformers folder to the zoo format."""
    parser.add_argument(
        "src", type=model_source, help="official .pth, transformers folder, Hub repo or name"
    )
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

    # A training run's folder converts its latest checkpoint.
    src = checkpoint_or_name(args.src)
    model = zoo.load(src, revision=args.revision, **parse_overrides(args.overrides))
    zoo.save_pretrained(model, args.dst)
    print(f"{args.src} -> {args.dst} ({model.load_report})")
    return 0
