"""The ``zoo`` command line (``python -m zoo COMMAND``): see :mod:`zoo.cli.main`."""

from zoo.cli.main import build_parser, main, parse_overrides

__all__ = ["build_parser", "main", "parse_overrides"]
