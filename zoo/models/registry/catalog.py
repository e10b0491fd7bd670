"""Registry of named variants: each is a default (official) configuration and its weights.

Like timm's ``_registry.py`` it imports no model module: :mod:`zoo.models.registry.variants`
registers the variants when the ``zoo.models`` package is imported, and
:mod:`zoo.models.registry.factory` builds them.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.models.config import BackboneConfig, ModelConfig, check_field_names

# The configuration fields that make a variant what it is, sizes aside; weights loaded
# under a variant's name must agree on them.
IDENTITY_FIELDS = ("family", "num_levels", "with_box_refine", "two_stage")


@dataclass(frozen=True)
class VariantInfo:
    """Metadata of a registered variant.

    ``hf_hub_id`` names the official checkpoint in transformers layout on the Hugging
    Face Hub, ``hf_revision`` the commit to use (None: the default branch);
    ``config`` is the default (official) configuration; ``coco_ap`` the published box
    AP of those weights on COCO val2017 and ``license`` theirs.
    """

    name: str
    description: str
    config: ModelConfig
    hf_hub_id: str | None = None
    hf_revision: str | None = None
    paper: str | None = None
    coco_ap: float | None = None
    license: str | None = None

    @property
    def family(self) -> str:
        return self.config.family


_REGISTRY: dict[str, VariantInfo] = {}


def register_variant(
    name: str,
    *,
    description: str,
    hf_hub_id: str | None = None,
    hf_revision: str | None = None,
    paper: str | None = None,
    coco_ap: float | None = None,
    license: str | None = None,
) -> Callable[[Callable[[], ModelConfig]], Callable[[], ModelConfig]]:
    """Register the default configuration returned by the decorated function under ``name``."""

    def decorator(default_config: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        if name in _REGISTRY:
            raise ValueError(f"variant {name!r} is already registered")
        _REGISTRY[name] = VariantInfo(
            name,
            description,
            default_config(),
            hf_hub_id,
            hf_revision,
            paper,
            coco_ap,
            license,
        )
        return default_config

    return decorator


@dataclass(frozen=True)
class BundledModel:
    """A trained model shipped inside the package: ``folder`` (zoo format) under ``zoo/``."""

    name: str
    description: str
    folder: str

    @property
    def path(self) -> Path:
        return Path(__file__).resolve().parents[2] / self.folder


_BUNDLED: dict[str, BundledModel] = {}


def register_bundled(name: str, *, description: str, folder: str) -> None:
    """Register a model whose weights travel with the package (loadable offline by name)."""
    if name in _BUNDLED or name in _REGISTRY:
        raise ValueError(f"model name {name!r} is already registered")
    _BUNDLED[name] = BundledModel(name, description, folder)


def list_bundled() -> list[str]:
    """Names of the models shipped with the package, sorted."""
    return sorted(_BUNDLED)


def get_bundled(name: str) -> BundledModel | None:
    """The bundled model ``name``, or None when no bundled model has that name."""
    return _BUNDLED.get(name)


def list_variants(family: str | None = None) -> list[str]:
    """Names of the registered variants (of one ``family`` if given), sorted."""
    return sorted(n for n, v in _REGISTRY.items() if family is None or v.family == family)


def get_variant(name: str) -> VariantInfo:
    """The metadata of variant ``name``."""
    if name not in _REGISTRY:
        raise KeyError(unknown_name_message(name, what="variant"))
    return _REGISTRY[name]


def unknown_name_message(name: str, what: str = "model") -> str:
    """Why ``name`` is not a registered ``what``, with the registered names closest to it."""
    names = sorted(_REGISTRY) if what == "variant" else sorted({*_REGISTRY, *_BUNDLED})
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
    message = f"unknown {what} {name!r}{hint} Registered: {', '.join(names)}"
    if what == "model":
        message += " (or pass a local folder, a .pth checkpoint or a Hub repository id 'org/name')"
    return message


def identity(config: ModelConfig) -> dict[str, Any]:
    """The :data:`IDENTITY_FIELDS` of ``config`` (None where its family has no such field)."""
    return {f: getattr(config, f, None) for f in IDENTITY_FIELDS}


def variant_of(config: ModelConfig) -> str | None:
    """The registered variant whose architecture ``config`` has (sizes aside), if any.

    Variants differ by :func:`identity`; those that share it (DETR-R50, DETR-R101 and
    their DC5 forms) by their backbone depth and dilation, which must then match too.
    """
    same = [n for n in sorted(_REGISTRY) if identity(_REGISTRY[n].config) == identity(config)]
    if len(same) > 1:
        trunk = (config.backbone.depth, config.backbone.dilation)
        same = [
            n
            for n in same
            if (_REGISTRY[n].config.backbone.depth, _REGISTRY[n].config.backbone.dilation) == trunk
        ]
    return same[0] if same else None


def variant_config(name: str, **overrides: Any) -> ModelConfig:
    """The default configuration of ``name`` with ``overrides`` applied.

    Backbone fields may be given directly (``depth=18``, ``train_backbone=False``) or
    as ``backbone=BackboneConfig(...)``.
    """
    config = get_variant(name).config
    backbone_fields = {f.name for f in dataclasses.fields(BackboneConfig)}
    check_field_names(type(config), overrides, name, also=backbone_fields)
    backbone_overrides = {k: overrides.pop(k) for k in list(overrides) if k in backbone_fields}
    if backbone_overrides:
        base = overrides.pop("backbone", config.backbone)
        overrides["backbone"] = dataclasses.replace(base, **backbone_overrides)
    return dataclasses.replace(config, **overrides)
