"""The ``plot`` command: a training run's loss and AP curves as a PNG::

python -m zoo plot runs/x                 # runs/x/curves.png
python -m zoo plot runs/x --out x.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli.args import Runner


def declare_plot(parser: argparse.ArgumentParser) -> Runner:
    """``zoo plot RUN_DIR [--out PNG]``: draw ``RUN_DIR/metrics.jsonl``."""
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=Path,
        help="a training run's folder (holds metrics.jsonl)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="PNG to write (default: RUN/curves.png)"
    )
    return run_plot


def run_plot(args: argparse.Namespace) -> int:
    """Draw the curves with :func:`zoo.curves.plot_run`."""
    from zoo.curves import plot_run

    print(f"curves -> {plot_run(args.run_dir, args.out)}")
    return 0
