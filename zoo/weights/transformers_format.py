"""Weights in transformers' layout (config.json + model.safetensors) to zoo models.

Reads ``DetrForObjectDetection`` and ``DeformableDetrForObjectDetection`` folders, as
saved by transformers 4.x (the Hub checkpoints) or 5.x (renamed attention and MLP
keys, tied heads stored once). Keys are renamed, q/k/v projections packed into
``nn.MultiheadAttention``'s ``in_proj``, and aliased heads resolved.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.models.config import BackboneConfig, DeformableDetrConfig, DetrConfig, ModelConfig
from zoo.models.families import build_model
from zoo.weights.convert import Rules, load_weights, rename_key, resolve_heads, split_heads

# Weight files of a transformers folder, in order of preference (never a pickle first).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# transformers 5 renamed some keys; bring them back to the 4.x names first.
_V5_TO_V4: Rules = [
    (r"\.o_proj\.", ".out_proj."),
    (r"\.mlp\.fc([12])\.", r".fc\1."),
    (r"^model\.backbone\.model\.", "model.backbone.conv_encoder.model."),
]

# 4.x name -> zoo name, for the parts DETR and Deformable DETR share.
_COMMON: Rules = [
    (r"^model\.backbone\.conv_encoder\.model\.", "backbone.body."),
    (r"\.self_attn_layer_norm\.", ".norm1."),
    (r"\.encoder_attn_layer_norm\.", ".norm2."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.fc1\.", ".ffn.linear1."),
    (r"\.fc2\.", ".ffn.linear2."),
    (r"\.final_layer_norm\.", ".ffn.norm."),
]

_DETR: Rules = [
    (r"^model\.encoder\.layers\.", "transformer.encoder."),
    (r"^model\.decoder\.layers\.", "transformer.decoder."),
    (r"^model\.decoder\.layernorm\.", "transformer.decoder_norm."),
    (r"^model\.input_projection\.", "input_proj."),
    (r"^model\.query_position_embeddings\.", "query_embed."),
    (r"^class_labels_classifier\.", "class_embed."),
    (r"^bbox_predictor\.", "bbox_embed."),
]

_DEFORMABLE: Rules = [
    (r"^model\.encoder\.layers\.", "encoder.layers."),
    (r"^model\.decoder\.layers\.", "decoder.layers."),
    (r"^model\.input_proj\.", "levels.input_proj."),
    (r"^model\.level_embed$", "levels.level_embed"),
    (r"^model\.query_position_embeddings\.", "queries.query_embed."),
    (
        r"^model\.(reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)\.",
        r"queries.\1.",
    ),
]


def config_from_transformers(hf: dict[str, Any], **overrides: Any) -> ModelConfig:
    """Our configuration for a transformers ``config.json`` (as a dict)."""
    model_type = hf.get("model_type")
    if hf.get("position_embedding_type", "sine") != "sine":
        raise ValueError("only the sine position embedding is supported")
    if hf.get("activation_function", "relu") != "relu":
        raise ValueError("only ReLU feed-forward layers are supported")
    for a, b in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        if a in hf and b in hf and hf[a] != hf[b]:
            raise ValueError(f"{a} != {b} is not supported")
    common: dict[str, Any] = {
        "backbone": BackboneConfig(
            depth=_resnet_depth(hf), dilation=bool(hf.get("dilation", False))
        ),
        "num_classes": len(hf["id2label"]) if "id2label" in hf else hf.get("num_labels", 91),
        "hidden_dim": hf["d_model"],
        "nheads": hf["encoder_attention_heads"],
        "enc_layers": hf["encoder_layers"],
        "dec_layers": hf["decoder_layers"],
        "ffn_dim": hf["encoder_ffn_dim"],
        "num_queries": hf["num_queries"],
        "dropout": hf.get("dropout", 0.1),
    }
    if model_type == "detr":
        return DetrConfig(**{**common, **overrides})
    if model_type == "deformable_detr":
        two_stage = bool(hf.get("two_stage", False))
        if two_stage:
            common["num_queries"] = hf.get("two_stage_num_proposals", common["num_queries"])
        common.update(
            num_levels=hf["num_feature_levels"],
            enc_points=hf["encoder_n_points"],
            dec_points=hf["decoder_n_points"],
            with_box_refine=bool(hf.get("with_box_refine", False)),
            two_stage=two_stage,
        )
        return DeformableDetrConfig(**{**common, **overrides})
    raise ValueError(f"unsupported model_type {model_type!r} (want 'detr' or 'deformable_detr')")


def _resnet_depth(hf: dict[str, Any]) -> int:
    bb = hf.get("backbone_config") or {}
    if bb.get("model_type", "timm_backbone") != "timm_backbone" or not hf.get(
        "use_timm_backbone", True
    ):
        raise ValueError("only timm ResNet backbones (use_timm_backbone=True) are supported")
    name = bb.get("backbone") or hf.get("backbone") or "resnet50"
    match = re.fullmatch(r"resnet(\d+)", name)
    if match is None:
        raise ValueError(f"unsupported backbone {name!r}: want resnet18/34/50/101")
    return int(match.group(1))


def convert_state_dict(
    hf_state: dict[str, Tensor], config: ModelConfig
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a transformers state dict to the zoo model's keys.

    Returns the converted dict and the checkpoint keys that found no place.
    """
    deformable = isinstance(config, DeformableDetrConfig)
    rules = _COMMON + (_DEFORMABLE if deformable else _DETR)
    state = {
        rename_key(k, _V5_TO_V4): v
        for k, v in hf_state.items()
        if not k.endswith("num_batches_tracked")
    }
    unused: list[str] = []
    if isinstance(config, DeformableDetrConfig):
        state, heads = split_heads(state)
    out = {rename_key(k, rules): v for k, v in state.items()}
    _pack_qkv(out)
    if isinstance(config, DeformableDetrConfig):
        unused = resolve_heads(heads, config, out)
    return out, unused


def _pack_qkv(state: dict[str, Tensor]) -> None:
    """Merge separate q/k/v projections into ``in_proj_weight``/``in_proj_bias`` in place."""
    prefixes = {k[: -len("q_proj.weight")] for k in state if k.endswith("q_proj.weight")}
    for p in prefixes:
        for kind in ("weight", "bias"):
            parts = [state.pop(f"{p}{n}_proj.{kind}", None) for n in "qkv"]
            if any(t is None for t in parts):
                raise KeyError(f"incomplete q/k/v projections under {p!r}")
            state[f"{p}in_proj_{kind}"] = torch.cat(parts)  # type: ignore[arg-type]


def weights_file(folder: str | Path) -> Path:
    """The weights of a folder: ``model.safetensors``, else ``pytorch_model.bin``."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} holds no {' or '.join(WEIGHT_FILES)}")


def load_transformers_folder(
    path: str | Path,
    *,
    strict: bool = True,
    dtype: torch.dtype | None = None,
    reinit_class_heads: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build the zoo model for a transformers folder and load its weights.

    Args:
        path: folder with ``config.json`` and ``model.safetensors`` (or, read with
            ``torch.load(weights_only=True)``, ``pytorch_model.bin``).
        strict: raise ``ValueError`` if any key is missing, unexpected or mismatched;
            otherwise warn.
        dtype: cast the model to this dtype after loading.
        reinit_class_heads: when ``overrides`` change ``num_classes``, re-create every
            class head (prior-probability bias for focal models) and load the rest
            strictly, instead of reporting the heads as mismatched.
        overrides: configuration fields to change.

    Returns:
        The model in eval mode; ``model.load_report`` holds the :class:`~zoo.weights.convert.LoadReport`.
    """
    from zoo.weights.official_format import read_state_dict

    folder = Path(path)
    hf_config = json.loads((folder / "config.json").read_text())
    config = config_from_transformers(hf_config, **overrides)
    new_heads = reinit_class_heads and (
        config.num_classes != config_from_transformers(hf_config).num_classes
    )
    model = build_model(config)
    state, unused = convert_state_dict(read_state_dict(weights_file(folder)), config)
    load_weights(model, state, unused, folder, strict, new_class_heads=new_heads)
    return model if dtype is None else model.to(dtype)
