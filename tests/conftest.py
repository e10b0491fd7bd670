"""Shared pytest configuration: tests marked ``gpu`` skip without a CUDA device; tests marked
``interpreter`` run only where Triton interprets (the child process that
tests/test_msda_triton.py::test_interpreter_cases starts), and are deselected elsewhere."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        interpreted = [item for item in items if "interpreter" in item.keywords]
        if interpreted:
            config.hook.pytest_deselected(items=interpreted)
            items[:] = [item for item in items if "interpreter" not in item.keywords]
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (make test-gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
