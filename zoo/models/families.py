"""From a configuration to a model: the one place that maps config types to classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from zoo.models.config import DeformableDetrConfig, DetrConfig, ModelConfig


def build_model(config: ModelConfig) -> nn.Module:
    """A model with random weights for ``config``."""
    return builder_for(config)(config)


def builder_for(config: ModelConfig) -> Callable[[Any], nn.Module]:
    """The builder that reads configurations of ``config``'s type."""
    if isinstance(config, DetrConfig):
        from zoo.models.detr import DETR

        return DETR
    if isinstance(config, DeformableDetrConfig):
        from zoo.models.deformable_detr import build_deformable_detr

        return build_deformable_detr
    raise TypeError(f"no builder for configuration type {type(config).__name__}")
