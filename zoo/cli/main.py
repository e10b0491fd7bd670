"""The ``zoo`` command line: ``zoo COMMAND ...`` or ``python -m zoo COMMAND ...``.

Every command is one entry of :data:`COMMANDS`: its name, its help and the function
that declares its arguments and returns the function running it. The commands live by
group: :mod:`zoo.cli.training` (``train``, ``eval``, ``shapes``), :mod:`zoo.cli.models`
(``list``, ``convert``), :mod:`zoo.cli.detect` (``detect``); :mod:`zoo.cli.args` holds
the parsing they share.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from zoo.cli import detect, models, training
from zoo.cli.args import Declare

COMMANDS: tuple[tuple[str, str, Declare], ...] = (
    ("train", "train or fine-tune a model on a COCO-layout dataset", training.declare_train),
    ("eval", "COCO box AP of a model on a COCO-layout dataset", training.declare_eval),
    ("shapes", "write a synthetic COCO-format dataset of shapes", training.declare_shapes),
    ("list", "list the named models and their checkpoints", models.declare_list),
    ("detect", "detect objects in images and draw them", detect.declare_detect),
    (
        "convert",
        "convert official or transformers weights to the zoo format",
        models.declare_convert,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="zoo", description="DETR and Deformable DETR model zoo")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, declare in COMMANDS:
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(run=declare(sub_parser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m zoo`` and of the ``zoo`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
