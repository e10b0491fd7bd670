"""DETR and Deformable DETR models, losses and matching.

The package in rooms: ``models/`` (configurations, the registry of named variants, the
model families and their parts), ``loss/`` (criterion, Hungarian matcher), ``weights/``
(``zoo.load``, the Hub, official ``.pth`` and transformers conversion, the zoo format),
``detect/`` (detection on image files, drawing), ``data/`` (datasets, COCO evaluation),
``training/``, ``cli/`` (the ``zoo`` command), ``export.py`` (ONNX, ``.pt2``) and ``demo.py``.

>>> import zoo
>>> zoo.list_variants()
['ddetr', 'ddetr-refine', 'ddetr-single-scale', 'ddetr-two-stage', 'detr-r101', 'detr-r50']
>>> model = zoo.create_model("ddetr", num_classes=3, depth=18)  # random weights
>>> model = zoo.load("ddetr-two-stage")  # official weights from the Hub (or its cache)
>>> zoo.save_pretrained(model, "my-detector")  # config.json + model.safetensors + README.md

The public names are imported on first use (module ``__getattr__``): ``import zoo`` and
``zoo --help`` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # re-exported through __all__ (ruff cannot see it computed)
    from zoo.loss.criterion import SetCriterion, build_criterion  # noqa: F401
    from zoo.models.config import (  # noqa: F401
        BackboneConfig,
        ConfigError,
        DeformableDetrConfig,
        DetrConfig,
        LossConfig,
    )
    from zoo.models.registry.catalog import get_variant, list_variants, variant_config  # noqa: F401
    from zoo.models.registry.factory import ModelRecord, create_model, list_models  # noqa: F401
    from zoo.models.registry.families import build_model  # noqa: F401
    from zoo.weights.convert import WeightsError  # noqa: F401
    from zoo.weights.hub import WeightsNotFoundError, load  # noqa: F401
    from zoo.weights.official_format import load_official_checkpoint  # noqa: F401
    from zoo.weights.transformers_format import load_transformers_folder  # noqa: F401
    from zoo.weights.zoo_format import load_pretrained, push_to_hub, save_pretrained  # noqa: F401

# Public name -> the module defining it.
_LAZY: dict[str, str] = {
    "SetCriterion": "zoo.loss.criterion",
    "build_criterion": "zoo.loss.criterion",
    "BackboneConfig": "zoo.models.config",
    "ConfigError": "zoo.models.config",
    "DeformableDetrConfig": "zoo.models.config",
    "DetrConfig": "zoo.models.config",
    "LossConfig": "zoo.models.config",
    "ModelRecord": "zoo.models.registry.factory",
    "create_model": "zoo.models.registry.factory",
    "list_models": "zoo.models.registry.factory",
    "build_model": "zoo.models.registry.families",
    "get_variant": "zoo.models.registry.catalog",
    "list_variants": "zoo.models.registry.catalog",
    "variant_config": "zoo.models.registry.catalog",
    "WeightsError": "zoo.weights.convert",
    "WeightsNotFoundError": "zoo.weights.hub",
    "load": "zoo.weights.hub",
    "load_official_checkpoint": "zoo.weights.official_format",
    "load_transformers_folder": "zoo.weights.transformers_format",
    "load_pretrained": "zoo.weights.zoo_format",
    "push_to_hub": "zoo.weights.zoo_format",
    "save_pretrained": "zoo.weights.zoo_format",
}

# The public names: those of the table above (the imports under TYPE_CHECKING are for
# type checkers, which cannot follow ``__getattr__``).
__all__ = sorted(_LAZY)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
