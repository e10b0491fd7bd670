"""Weights in transformers' layout (config.json + model.safetensors) to zoo models.

Reads ``DetrForObjectDetection`` and ``DeformableDetrForObjectDetection`` folders, as
saved by transformers 4.x (the Hub checkpoints) or 5.x (renamed attention and MLP
keys, tied heads stored once). Keys are renamed, q/k/v projections packed into
``nn.MultiheadAttention``'s ``in_proj``, and aliased heads resolved.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.models.config import BackboneConfig, ModelConfig, check_field_names
from zoo.models.registry.families import build_model, family_named, family_of
from zoo.weights.convert import (
    WeightsError,
    load_weights,
    read_json_object,
    read_state_dict,
    resolve_heads,
    split_heads,
)
from zoo.weights.key_renaming import (
    LAYOUTS,
    TRANSFORMERS_COMMON,
    TRANSFORMERS_V5_TO_V4,
    rename_key,
)

# Weight files of a transformers folder, in order of preference (never a pickle first).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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
    name = next((n for n, lay in LAYOUTS.items() if lay.transformers_type == model_type), None)
    if name is None:
        types = " or ".join(repr(lay.transformers_type) for lay in LAYOUTS.values())
        raise ValueError(f"unsupported model_type {model_type!r} (want {types})")
    family, layout = family_named(name), LAYOUTS[name]
    fields: dict[str, Any] = {
        "backbone": BackboneConfig(
            depth=_depth_of_backbone_name(hf), dilation=bool(hf.get("dilation", False))
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
    fields.update(
        {ours: hf[theirs] for ours, theirs in layout.transformers_fields.items() if theirs in hf}
    )
    if hf.get("two_stage", False):
        # Two-stage queries are the top proposals; transformers counts them separately.
        fields["num_queries"] = hf.get("two_stage_num_proposals", fields["num_queries"])
    check_field_names(family.config_type, overrides, "overrides")
    return family.config_type(**{**fields, **overrides})


def _depth_of_backbone_name(hf: dict[str, Any]) -> int:
    """The ResNet depth of a timm backbone named in a transformers configuration."""
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
    family = family_of(config)
    rules = TRANSFORMERS_COMMON + LAYOUTS[family.name].transformers_keys
    state = {
        rename_key(k, TRANSFORMERS_V5_TO_V4): v
        for k, v in hf_state.items()
        if not k.endswith("num_batches_tracked")
    }
    if family.per_layer_heads:
        state, heads = split_heads(state)
    out = {rename_key(k, rules): v for k, v in state.items()}
    _pack_qkv(out)
    return out, resolve_heads(heads, config, out) if family.per_layer_heads else []


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
    folder = Path(path)
    hf_config = read_json_object(folder / "config.json")
    try:
        stored = config_from_transformers(hf_config)
    except (KeyError, TypeError, ValueError) as e:
        detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise WeightsError(f"{folder / 'config.json'}: {detail}") from e
    config = config_from_transformers(hf_config, **overrides)
    new_heads = reinit_class_heads and config.num_classes != stored.num_classes
    model = build_model(config)
    state, unused = convert_state_dict(read_state_dict(weights_file(folder)), config)
    load_weights(model, state, unused, folder, strict, new_class_heads=new_heads)
    return model if dtype is None else model.to(dtype)
