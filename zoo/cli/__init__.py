"""The ``zoo`` command line (``zoo COMMAND``, ``python -m zoo COMMAND``): see :mod:`zoo.cli.main`."""

from zoo.cli.args import parse_overrides
from zoo.cli.main import build_parser, main

__all__ = ["build_parser", "main", "parse_overrides"]
