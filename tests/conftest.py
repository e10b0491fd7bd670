"""Shared pytest configuration: tests marked ``gpu`` skip without a CUDA device."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (make test-gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
