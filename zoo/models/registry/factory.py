"""Named variants to models: ``create_model`` and the ``list_models`` table."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.models.registry.catalog import (
    get_bundled,
    get_variant,
    list_bundled,
    list_variants,
    variant_config,
)
from zoo.models.registry.families import build_model


@dataclass(frozen=True)
class ModelRecord:
    """One row of :func:`list_models`: a named model and its published weights.

    ``revision`` is the pinned Hub commit ("bundled": weights shipped in the package;
    None: not pinned, the default branch is
    used); ``num_params`` counts the parameters of the default configuration.
    """

    name: str
    repo_id: str | None
    revision: str | None
    coco_ap: float | None
    num_params: int
    license: str | None


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build variant ``name`` with random weights; ``overrides`` change configuration fields.

    Example: ``create_model("ddetr", hidden_dim=64, enc_layers=1, num_classes=3, depth=18)``.
    """
    return build_model(variant_config(name, **overrides))


def list_models() -> list[ModelRecord]:
    """Every registered model with its checkpoint, pinned revision, COCO AP and size, by name."""
    records = []
    for name in list_variants():
        info = get_variant(name)
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
    for name in list_bundled():
        bundled = get_bundled(name)
        assert bundled is not None
        records.append(
            ModelRecord(
                name=name,
                repo_id=None,
                revision="bundled",
                coco_ap=None,
                num_params=_safetensors_numel(bundled.path / "model.safetensors"),
                license="Apache-2.0",
            )
        )
    return records


def _safetensors_numel(path: Path) -> int:
    """Elements of every tensor of a safetensors file, read from its header (0 if absent)."""
    if not path.is_file():
        return 0
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


@functools.cache
def _num_params(name: str) -> int:
    # On the meta device nothing is allocated or initialised: only shapes are built.
    with torch.device("meta"):
        model = build_model(get_variant(name).config)
    return sum(p.numel() for p in model.parameters())
