"""Registry of named variants: each is a default configuration plus a builder."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from zoo.config import BackboneConfig, ModelConfig


@dataclass(frozen=True)
class VariantInfo:
    """Metadata of a registered variant.

    ``hf_hub_id`` names the official checkpoint in transformers layout on the Hugging
    Face Hub, ``hf_revision`` the commit to use (None: the default branch);
    ``config`` is the default (official) configuration.
    """

    name: str
    family: str
    description: str
    config: ModelConfig
    build: Callable[[Any], nn.Module]
    hf_hub_id: str | None = None
    hf_revision: str | None = None
    paper: str | None = None


_REGISTRY: dict[str, VariantInfo] = {}


def register_variant(
    name: str,
    *,
    family: str,
    description: str,
    hf_hub_id: str | None = None,
    hf_revision: str | None = None,
    paper: str | None = None,
) -> Callable[[Callable[[], ModelConfig]], Callable[[], ModelConfig]]:
    """Register the default configuration returned by the decorated function under ``name``.

    The builder is looked up from the configuration's type when the variant is built.
    """

    def decorator(default_config: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        if name in _REGISTRY:
            raise ValueError(f"variant {name!r} is already registered")
        from zoo.builders import builder_for

        config = default_config()
        _REGISTRY[name] = VariantInfo(
            name, family, description, config, builder_for(config), hf_hub_id, hf_revision, paper
        )
        return default_config

    return decorator


def list_variants(family: str | None = None) -> list[str]:
    """Names of the registered variants (of one ``family`` if given), sorted."""
    _ensure_registered()
    return sorted(n for n, v in _REGISTRY.items() if family is None or v.family == family)


def get_variant(name: str) -> VariantInfo:
    """The metadata of variant ``name``."""
    _ensure_registered()
    if name not in _REGISTRY:
        raise KeyError(f"unknown variant {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def variant_config(name: str, **overrides: Any) -> ModelConfig:
    """The default configuration of ``name`` with ``overrides`` applied.

    Backbone fields may be given directly (``depth=18``, ``train_backbone=False``) or
    as ``backbone=BackboneConfig(...)``.
    """
    config = get_variant(name).config
    backbone_fields = {f.name for f in dataclasses.fields(BackboneConfig)}
    backbone_overrides = {k: overrides.pop(k) for k in list(overrides) if k in backbone_fields}
    if backbone_overrides:
        base = overrides.pop("backbone", config.backbone)
        overrides["backbone"] = dataclasses.replace(base, **backbone_overrides)
    return dataclasses.replace(config, **overrides)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build variant ``name`` with random weights; ``overrides`` change configuration fields.

    Example: ``create_model("ddetr", hidden_dim=64, enc_layers=1, num_classes=3, depth=18)``.
    """
    config = variant_config(name, **overrides)
    return get_variant(name).build(config)


def _ensure_registered() -> None:
    # The variants register themselves when their module is imported.
    import zoo.variants  # noqa: F401
