"""Checkpoints of the original repositories (facebookresearch/detr, fundamentalvision/Deformable-DETR).

Their ``.pth`` files hold ``{"model": state_dict, ...}``; the architecture is not stored,
so the caller names the variant and the class count is read from the class head.
Nothing is unpickled beyond tensors and plain containers (``weights_only=True``; the
``args`` namespace the training script saves is allowed as data).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from zoo.checkpoint import Rules, load_weights, rename_key, resolve_heads, split_heads
from zoo.config import DeformableDetrConfig, ModelConfig
from zoo.registry import create_model, variant_config

# Official name -> zoo name. Deformable DETR's decoder numbers its norms in the order
# the layers were written (cross-attention first), ours in the order they run.
_DETR: Rules = [
    (r"^backbone\.0\.body\.", "backbone.body."),
    (r"^transformer\.(encoder|decoder)\.layers\.", r"transformer.\1."),
    (r"^transformer\.decoder\.norm\.", "transformer.decoder_norm."),
    (r"\.multihead_attn\.", ".cross_attn."),
    (r"^(transformer\.encoder\.\d+)\.norm2\.", r"\1.ffn.norm."),
    (r"^(transformer\.decoder\.\d+)\.norm3\.", r"\1.ffn.norm."),
    (r"\.linear([12])\.", r".ffn.linear\1."),
]

_DEFORMABLE: Rules = [
    (r"^backbone\.0\.body\.", "backbone.body."),
    (r"^input_proj\.", "levels.input_proj."),
    (r"^transformer\.level_embed$", "levels.level_embed"),
    (r"^query_embed\.", "queries.query_embed."),
    (
        r"^transformer\.(reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)\.",
        r"queries.\1.",
    ),
    (r"^transformer\.(encoder|decoder)\.layers\.", r"\1.layers."),
    (r"^(encoder\.layers\.\d+)\.norm2\.", r"\1.ffn.norm."),
    (r"^(decoder\.layers\.\d+)\.norm3\.", r"\1.ffn.norm."),
    (r"^(decoder\.layers\.\d+)\.norm([12])\.", lambda m: f"{m[1]}.norm{3 - int(m[2])}."),
    (r"\.linear([12])\.", r".ffn.linear\1."),
]


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The model weights of a ``.safetensors`` file or an official ``.pth`` checkpoint."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    return state


def convert_official_state_dict(
    state: dict[str, Tensor], config: ModelConfig
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an official state dict to the zoo's keys; also returns unused checkpoint keys."""
    if isinstance(config, DeformableDetrConfig):
        rest, heads = split_heads(state)
        out = {rename_key(k, _DEFORMABLE): v for k, v in rest.items()}
        return out, resolve_heads(heads, config, out)
    return {rename_key(k, _DETR): v for k, v in state.items()}, []


def load_official_checkpoint(
    path: str | Path, name: str, *, strict: bool = True, **overrides: Any
) -> nn.Module:
    """Variant ``name`` with the weights of an official checkpoint, in eval mode.

    ``num_classes`` is taken from the checkpoint unless overridden; other sizes come
    from the variant's defaults and ``overrides``.
    """
    state = {
        k: v for k, v in read_state_dict(path).items() if not k.endswith("num_batches_tracked")
    }
    config = variant_config(name, **overrides)
    if "num_classes" not in overrides:
        overrides["num_classes"] = _num_classes(state, config)
    model = create_model(name, **overrides)
    converted, unused = convert_official_state_dict(state, model.config)  # type: ignore[arg-type]
    return load_weights(model, converted, unused, path, strict)


def _num_classes(state: dict[str, Tensor], config: ModelConfig) -> int:
    for key in ("class_embed.weight", "class_embed.0.weight"):
        if key in state:
            rows = state[key].shape[0]
            # DETR's head has one more row: "no object".
            return rows if isinstance(config, DeformableDetrConfig) else rows - 1
    raise ValueError("no class head in the checkpoint")
