"""Registry of named variants: each is a default configuration plus a builder."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.models.config import BackboneConfig, DetrConfig, ModelConfig


@dataclass(frozen=True)
class VariantInfo:
    """Metadata of a registered variant.

    ``hf_hub_id`` names the official checkpoint in transformers layout on the Hugging
    Face Hub, ``hf_revision`` the commit to use (None: the default branch);
    ``config`` is the default (official) configuration; ``coco_ap`` the published box
    AP of those weights on COCO val2017 and ``license`` theirs.
    """

    name: str
    family: str
    description: str
    config: ModelConfig
    build: Callable[[Any], nn.Module]
    hf_hub_id: str | None = None
    hf_revision: str | None = None
    paper: str | None = None
    coco_ap: float | None = None
    license: str | None = None


@dataclass(frozen=True)
class ModelRecord:
    """One row of :func:`list_models`: a named model and its published weights.

    ``revision`` is the pinned Hub commit (None: not pinned, the default branch is
    used); ``num_params`` counts the parameters of the default configuration.
    """

    name: str
    repo_id: str | None
    revision: str | None
    coco_ap: float | None
    num_params: int
    license: str | None


_REGISTRY: dict[str, VariantInfo] = {}


def register_variant(
    name: str,
    *,
    family: str,
    description: str,
    hf_hub_id: str | None = None,
    hf_revision: str | None = None,
    paper: str | None = None,
    coco_ap: float | None = None,
    license: str | None = None,
) -> Callable[[Callable[[], ModelConfig]], Callable[[], ModelConfig]]:
    """Register the default configuration returned by the decorated function under ``name``.

    The builder is looked up from the configuration's type when the variant is built.
    """

    def decorator(default_config: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        if name in _REGISTRY:
            raise ValueError(f"variant {name!r} is already registered")
        from zoo.models.families import builder_for

        config = default_config()
        _REGISTRY[name] = VariantInfo(
            name,
            family,
            description,
            config,
            builder_for(config),
            hf_hub_id,
            hf_revision,
            paper,
            coco_ap,
            license,
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
        raise KeyError(unknown_name_message(name, what="variant"))
    return _REGISTRY[name]


def unknown_name_message(name: str, what: str = "model") -> str:
    """Why ``name`` is not a registered ``what``, with the registered names closest to it."""
    _ensure_registered()
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
    message = f"unknown {what} {name!r}{hint} Registered: {', '.join(sorted(_REGISTRY))}"
    if what == "model":
        message += " (or pass a local folder, a .pth checkpoint or a Hub repository id 'org/name')"
    return message


def list_models() -> list[ModelRecord]:
    """Every registered model with its checkpoint, pinned revision, COCO AP and size, by name."""
    records = []
    for name in list_variants():
        info = _REGISTRY[name]
        records.append(
            ModelRecord(
                name=name,
                repo_id=info.hf_hub_id,
                revision=info.hf_revision,
                coco_ap=info.coco_ap,
                num_params=_num_params(name),
                license=info.license,
            )
        )
    return records


@functools.cache
def _num_params(name: str) -> int:
    # On the meta device nothing is allocated or initialised: only shapes are built.
    info = _REGISTRY[name]
    with torch.device("meta"):
        model = info.build(info.config)
    return sum(p.numel() for p in model.parameters())


def variant_of(config: ModelConfig) -> str | None:
    """The registered variant whose architecture ``config`` has (sizes aside), if any.

    Variants differ by configuration type, backbone depth, feature levels, box
    refinement and two-stage; hidden sizes and class counts may differ.
    """
    _ensure_registered()
    for name in sorted(_REGISTRY):
        if _identity(_REGISTRY[name].config) == _identity(config):
            return name
    return None


def _identity(config: ModelConfig) -> tuple[Any, ...]:
    fields = ("num_levels", "with_box_refine", "two_stage")
    extra = tuple(getattr(config, f, None) for f in fields)
    # Deformable variants are named for their heads, not their ResNet.
    depth = config.backbone.depth if isinstance(config, DetrConfig) else None
    return (type(config).__name__, depth, *extra)


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
    import zoo.models.variants  # noqa: F401
