"""Tiny transformers models with random weights: the independent implementation the
zoo's models are compared with."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from support.tiny import NUM_CLASSES, NUM_QUERIES, TINY, randomize_


def hf_kwargs(deformable: bool, **extra: Any) -> dict[str, Any]:
    """transformers config arguments matching ``TINY`` with a random timm ResNet-18."""
    kw: dict[str, Any] = {
        "use_timm_backbone": True,
        "backbone": f"resnet{TINY['depth']}",
        "use_pretrained_backbone": False,
        "d_model": TINY["hidden_dim"],
        "encoder_layers": TINY["enc_layers"],
        "decoder_layers": TINY["dec_layers"],
        "encoder_attention_heads": TINY["nheads"],
        "decoder_attention_heads": TINY["nheads"],
        "encoder_ffn_dim": TINY["ffn_dim"],
        "decoder_ffn_dim": TINY["ffn_dim"],
        "num_queries": NUM_QUERIES,
        "num_labels": NUM_CLASSES,
        # True would make transformers DETR feed layer-normed states to the next decoder
        # layer (the official decoder norms only what the heads see): keep it off.
        "auxiliary_loss": False,
    }
    if deformable:
        kw["two_stage_num_proposals"] = NUM_QUERIES
    kw.update(extra)
    return kw


TOL = 1e-6  # float64 outputs of the zoo and transformers on the same weights

# name -> (deformable, extra transformers config arguments)
CASES = {
    "detr": (False, {}),
    # DC5: timm's ResNet-18 at output stride 16 (dilated basic blocks).
    "detr-dc5": (False, {"dilation": True}),
    "ddetr-single-scale": (True, {"num_feature_levels": 1}),
    "ddetr-single-scale-dc5": (True, {"num_feature_levels": 1, "dilation": True}),
    "ddetr": (True, {}),
    "ddetr-refine": (True, {"with_box_refine": True}),
    "ddetr-two-stage": (True, {"with_box_refine": True, "two_stage": True}),
}


def build_hf(name: str, seed: int = 0) -> nn.Module:
    """A tiny transformers model for one of ``CASES``, every weight random, in eval mode."""
    import transformers

    deformable, extra = CASES[name]
    if deformable:
        config = transformers.DeformableDetrConfig(**hf_kwargs(True, **extra))
        model = transformers.DeformableDetrForObjectDetection(config)
    else:
        config = transformers.DetrConfig(**hf_kwargs(False, **extra))
        model = transformers.DetrForObjectDetection(config)
    randomize_(model, seed)
    return model.eval()


def _pack_qkv(state: dict[str, torch.Tensor]) -> None:
    for key in [k for k in state if k.endswith("q_proj.weight")]:
        prefix = key[: -len("q_proj.weight")]
        for kind in ("weight", "bias"):
            parts = [state.pop(f"{prefix}{p}_proj.{kind}") for p in "qkv"]
            state[f"{prefix}in_proj_{kind}"] = torch.cat(parts)


def to_official(hf_state: dict[str, torch.Tensor], deformable: bool) -> dict[str, torch.Tensor]:
    """transformers 5 names -> the original repositories' names."""
    out = {}
    for key, value in hf_state.items():
        k = key.replace("model.backbone.model.", "backbone.0.body.")
        k = (
            k.replace(".o_proj.", ".out_proj.")
            .replace(".mlp.fc1.", ".linear1.")
            .replace(".mlp.fc2.", ".linear2.")
        )
        encoder = ".encoder.layers." in k
        if deformable:
            k = k.replace("model.input_proj.", "input_proj.").replace(
                "model.query_position_embeddings.", "query_embed."
            )
            k = re.sub(r"^model\.", "transformer.", k)
            k = k.replace(".encoder_attn.", ".cross_attn.")
            if encoder:
                k = k.replace("self_attn_layer_norm", "norm1").replace("final_layer_norm", "norm2")
            else:
                k = k.replace("encoder_attn_layer_norm", "norm1").replace(
                    "self_attn_layer_norm", "norm2"
                )
                k = k.replace("final_layer_norm", "norm3")
        else:
            k = k.replace("model.input_projection.", "input_proj.").replace(
                "model.query_position_embeddings.", "query_embed."
            )
            k = k.replace("model.decoder.layernorm.", "transformer.decoder.norm.")
            k = re.sub(r"^model\.", "transformer.", k)
            k = k.replace("class_labels_classifier.", "class_embed.").replace(
                "bbox_predictor.", "bbox_embed."
            )
            k = k.replace(".encoder_attn.", ".multihead_attn.")
            k = k.replace("self_attn_layer_norm", "norm1")
            k = k.replace("encoder_attn_layer_norm", "norm2")
            k = k.replace("final_layer_norm", "norm2" if encoder else "norm3")
        out[k] = value.detach().clone()
    _pack_qkv(out)
    return out
