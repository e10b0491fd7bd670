"""Argument parsing shared by the ``zoo`` commands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.data.areas import COCO_AREA_THRESHOLDS, check_area_thresholds

# A command: declared by a function that adds its arguments to a parser and returns the
# function running it (see :data:`zoo.cli.main.COMMANDS`).
Runner = Callable[[argparse.Namespace], int]
Declare = Callable[[argparse.ArgumentParser], Runner]


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


def probability(text: str) -> float:
    """argparse type: a number in [0, 1] (``--threshold``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def model_source(text: str) -> str:
    """argparse type: a model name, Hub id or an existing path; a path that does not
    exist (``/x.pth``, ``./run``...) is refused here rather than called an unknown model."""
    from zoo.weights.sources import looks_like_path

    if looks_like_path(text) and not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text!r}")
    return text


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """``--image-size`` and ``--device``, as every command that runs a model on images has."""
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="shorter side the model sees (default: the model's own, 800 for COCO models)",
    )
    parser.add_argument("--device", default=None, help="default: cuda when there is a GPU")


def add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--data`` (``required`` or not), batch size, image size, amp, workers, overrides and
    the area thresholds: the options ``zoo train`` and ``zoo eval`` share."""
    parser.add_argument(
        "--data", type=Path, required=required, default=None, help="dataset folder in COCO layout"
    )
    parser.add_argument("--batch-size", type=positive_int, default=2, help="images per process")
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="largest shorter side (default: train 800 as the official recipe; "
        "eval the model's own image_size)",
    )
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="mixed precision")
    parser.add_argument(
        "--workers", type=non_negative_int, default=2, help="data-loading processes"
    )
    parser.add_argument(
        "--overrides", nargs="*", default=[], metavar="KEY=VALUE", help="model configuration fields"
    )
    parser.add_argument(
        "--area-thresholds",
        nargs=2,
        type=float,
        default=COCO_AREA_THRESHOLDS,
        action=AreaThresholds,
        metavar=("SMALL", "MEDIUM"),
        help="the APs/APm/APl bucket bounds in pixels of area (default COCO's 1024 9216; "
        "`zoo shapes --multi-size` prints the ones scaled to its images)",
    )


class AreaThresholds(argparse.Action):
    """Two numbers with 0 < SMALL < MEDIUM, checked at parse time (exit 2, named)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        try:
            setattr(namespace, self.dest, check_area_thresholds(values))
        except ValueError as error:
            parser.error(f"{option_string}: {error}")


def checkpoint_or_name(source: str | Path) -> str | Path:
    """A training checkpoint folder when ``source`` names one (or a run's output folder)."""
    from zoo.training.checkpoint import resolve_checkpoint

    try:
        return resolve_checkpoint(source)
    except FileNotFoundError:
        return source


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):  # NaN, ±inf
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``low`` (else a usage error naming the argument)."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)

# The largest seed: numpy's legacy generator takes seeds below 2**32 (torch's below 2**64).
MAX_SEED = 2**32 - 1


def seed_int(text: str) -> int:
    """An argparse ``type``: a seed, an integer in [0, :data:`MAX_SEED`]."""
    value = non_negative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_SEED}], got {text}")
    return value


seed_int.__name__ = "seed"


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0."""
    value = float(_number(text, float))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a finite number >= 0."""
    value = float(_number(text, float))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def existing_path(text: str) -> Path:
    """An argparse ``type``: a path that exists (for arguments that are never Hub ids)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return path


def local_or_hub(source: str) -> str | Path:
    """A model source for ``zoo.load``: a training checkpoint when ``source`` names one, the
    path itself when it exists, else a name or Hub id.

    Raises:
        FileNotFoundError: ``source`` looks like a path (``./x``, ``/x``, ``~/x``, ``a/b/c``,
            a ``.pth`` file, or ``a/b`` where ``a`` is a local folder) but does not exist:
            it is a typo, not a Hub repository id.
    """
    path = Path(source).expanduser()
    if path.exists():
        return checkpoint_or_name(path)
    from zoo.weights.sources import looks_like_path

    parts = Path(source).parts
    # "a/b" is an org/name Hub id unless "a" is a local folder (then it is a mistyped path).
    path_like = looks_like_path(source) or (len(parts) == 2 and Path(parts[0]).is_dir())
    if path_like:
        raise FileNotFoundError(f"{source}: no such file or directory")
    return source
