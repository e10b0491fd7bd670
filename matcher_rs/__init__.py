"""Exact linear sum assignment in Rust (a drop-in for scipy's ``linear_sum_assignment``)."""

from matcher_rs._core import __version__

__all__ = ["__version__"]
