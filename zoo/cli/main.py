"""The ``zoo`` command line: ``zoo COMMAND ...`` or ``python -m zoo COMMAND ...``.

Every command is one entry of :data:`COMMANDS`: its name, its help and the function
that declares its arguments and returns the function running it. The commands live by
group: :mod:`zoo.cli.training` (``train``, ``shapes``), :mod:`zoo.cli.evaluation` (``eval``), :mod:`zoo.cli.models`
(``list``, ``convert``), :mod:`zoo.cli.detect` (``detect``), :mod:`zoo.cli.export`
(``export``), :mod:`zoo.cli.plot` (``plot``); :mod:`zoo.cli.args` holds the parsing they share.

Declaring the commands imports no torch: ``zoo --help`` answers at once, and each command
imports what it needs when it runs. A run-time error prints one line on stderr and exits
with status 1 (``--debug`` shows the traceback); usage errors exit with status 2. The
zoo's own warnings print as one line, ``zoo COMMAND: warning: MESSAGE`` (without the
source line Python's format adds); other packages' keep Python's format.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import zoo
from zoo.cli import detect, evaluation, export, models, plot, training
from zoo.cli.args import Declare

COMMANDS: tuple[tuple[str, str, Declare], ...] = (
    ("train", "train or fine-tune a model on a COCO-layout dataset", training.declare_train),
    ("eval", "COCO box AP of a model on a COCO-layout dataset", evaluation.declare_eval),
    ("shapes", "write a synthetic COCO-format dataset of shapes", training.declare_shapes),
    ("list", "list the named models and their checkpoints", models.declare_list),
    ("detect", "detect objects in images and draw them", detect.declare_detect),
    (
        "convert",
        "convert official or transformers weights to the zoo format",
        models.declare_convert,
    ),
    ("export", "export a model to ONNX (or a torch.export .pt2)", export.declare_export),
    ("plot", "draw a training run's loss and AP curves (PNG)", plot.declare_plot),
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, unless it is None/False or the help already says it.

    (:class:`argparse.ArgumentDefaultsHelpFormatter` also prints ``(default: None)``.)
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def _help_for_defaults(parser: argparse.ArgumentParser) -> None:
    # argparse prints no help line (so no default) for an option declared without help.
    for action in parser._actions:
        if action.help is None and action.option_strings and action.default not in (None, False):
            action.help = "(default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="zoo", description="DETR and Deformable DETR model zoo", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"zoo {zoo.__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of a run-time error"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, declare in COMMANDS:
        sub_parser = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        # --debug also after the command name; SUPPRESS keeps the top-level value otherwise.
        sub_parser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        sub_parser.set_defaults(command_runner=declare(sub_parser))
        _help_for_defaults(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m zoo`` and of the ``zoo`` console script.

    Returns the exit status: 0, 1 after a run-time error (its message on stderr, without
    the traceback unless ``--debug``), or the command's own; argparse exits with 2 on a
    usage error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # What the command line gave, for the commands that tell given options from defaults.
    args.given = given_options(argv)
    previous = warnings.formatwarning
    warnings.formatwarning = _one_line_for_zoo(args.command, previous)
    try:
        return int(args.command_runner(args))
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        first, *rest = str(error).strip().splitlines() or [""]
        print(
            f"zoo {args.command}: {type(error).__name__}: {first} (--debug: traceback)",
            file=sys.stderr,
        )
        # The rest of a message that lists problems (a dataset's, one per line) matters too.
        for line in rest:
            print(f"  {line}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = previous
        _end_distributed()


def given_options(argv: Sequence[str]) -> set[str]:
    """The dests of the options ``argv`` gives (its command's and the top level's), the
    ones left to their defaults excluded: ``argv`` parsed again with no defaults."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for p in (parser, *sub.choices.values()):
        for action in p._actions:
            action.default = argparse.SUPPRESS  # an option left out is then absent
    return set(vars(parser.parse_args(argv))) - {"command", "command_runner"}


_ZOO_DIR = Path(zoo.__file__).resolve().parent


def _one_line_for_zoo(command: str, fallback: Callable[..., str]) -> Callable[..., str]:
    """A ``warnings.formatwarning`` that writes the zoo's own warnings (those issued from
    its files) as ``zoo COMMAND: warning: MESSAGE``, one line, and others as ``fallback``."""

    def format_warning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        line: str | None = None,
    ) -> str:
        try:
            ours = Path(filename).resolve().is_relative_to(_ZOO_DIR)
        except (OSError, ValueError):
            ours = False
        if not ours:
            return fallback(message, category, filename, lineno, line)
        return f"zoo {command}: warning: {message}\n"

    return format_warning


def _end_distributed() -> None:
    # torch is only loaded when a command used it; a process group is only up if one did.
    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
