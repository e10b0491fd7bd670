"""The model families, DETR and Deformable DETR: the one table of what differs between them.

Each :class:`Family` names its configuration class, its builder and the two facts of
its architecture that converters need. Everything that depends on the family (building,
saving, converting) reads this table instead of testing the configuration's type; how
other layouts name its weights is :mod:`zoo.weights.key_renaming`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from zoo.models.config import DeformableDetrConfig, DetrConfig, ModelConfig
from zoo.models.deformable.model import build_deformable_detr
from zoo.models.detr.model import DETR


@dataclass(frozen=True)
class Family:
    """What one model family is made of.

    Attributes:
        config_type: its configuration class (``config_type.family`` is the name written
            to a zoo ``config.json``).
        build: configuration -> model with random weights.
        no_object_class: the class head has one more output, "no object" (DETR).
        per_layer_heads: checkpoints store the class/box heads once per decoder layer,
            often aliased (Deformable DETR); see :func:`zoo.weights.convert.resolve_heads`.
    """

    config_type: type[DetrConfig] | type[DeformableDetrConfig]
    build: Callable[[Any], nn.Module]
    no_object_class: bool
    per_layer_heads: bool

    @property
    def name(self) -> str:
        return self.config_type.family


DETR_FAMILY = Family(
    config_type=DetrConfig,
    build=DETR,
    no_object_class=True,
    per_layer_heads=False,
)

DEFORMABLE_FAMILY = Family(
    config_type=DeformableDetrConfig,
    build=build_deformable_detr,
    no_object_class=False,
    per_layer_heads=True,
)

FAMILIES: dict[str, Family] = {f.name: f for f in (DETR_FAMILY, DEFORMABLE_FAMILY)}


def family_named(name: str) -> Family:
    """The family called ``name`` (``"detr"`` or ``"deformable"``)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of(config: ModelConfig) -> Family:
    """The family whose configuration class ``config`` is."""
    family = FAMILIES.get(getattr(type(config), "family", ""))
    if family is None or not isinstance(config, family.config_type):
        raise TypeError(f"no model family for configuration type {type(config).__name__}")
    return family


def build_model(config: ModelConfig) -> nn.Module:
    """A model with random weights for ``config``."""
    return family_of(config).build(config)
