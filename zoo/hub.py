"""Named models with their official weights from the Hugging Face Hub (transformers layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from zoo.hf_format import load_transformers_folder
from zoo.registry import get_variant

# Only these two files are read: never a pickle.
_FILES = ["config.json", "model.safetensors"]

# The configuration fields that make a variant what it is; a checkpoint must agree.
_IDENTITY = ("num_levels", "with_box_refine", "two_stage")


def load(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    strict: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Variant ``name`` with its official weights, in eval mode.

    The checkpoint (``config.json`` + ``model.safetensors``) comes from the Hub, or
    from the local cache when offline (``HF_HUB_OFFLINE=1`` or ``local_files_only``).

    Args:
        revision: a branch, tag or commit of the Hub repository; default: the variant's.
        overrides: configuration fields to change, e.g. ``num_classes`` (the class heads
            are then re-initialised; needs ``strict=False``).
    """
    from huggingface_hub import snapshot_download

    info = get_variant(name)
    if info.hf_hub_id is None:
        raise ValueError(f"variant {name!r} has no published weights")
    folder = snapshot_download(
        info.hf_hub_id,
        revision=revision or info.hf_revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        allow_patterns=_FILES,
    )
    model = load_transformers_folder(str(folder), strict=strict, **overrides)
    config = model.config
    for field in _IDENTITY:
        if getattr(config, field, None) != getattr(info.config, field, None):
            raise ValueError(
                f"{info.hf_hub_id} does not hold a {name!r} model: {field} is "
                f"{getattr(config, field, None)!r}, expected {getattr(info.config, field, None)!r}"
            )
    return model
