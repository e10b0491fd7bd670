"""Official-repository checkpoints (.pth) load into the zoo and reproduce transformers.

transformers' Hub checkpoints were converted from the official ones; the test runs that
conversion backwards (official names as in facebookresearch/detr and
fundamentalvision/Deformable-DETR) on a random transformers model, saves a ``.pth`` like
the training scripts do, and requires the zoo model loaded from it to equal transformers.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
from test_zoo_helpers import SIZES, TOL, build_hf, padded_batch

from zoo.weights.official_format import load_official_checkpoint

pytest.importorskip("transformers")


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


@pytest.mark.parametrize(
    ("case", "variant"),
    [("detr", "detr-r50"), ("ddetr", "ddetr"), ("ddetr-two-stage", "ddetr-two-stage")],
)
def test_official_checkpoint_equals_transformers(case: str, variant: str, tmp_path: Path) -> None:
    hf = build_hf(case, seed=11)
    state = to_official(hf.state_dict(), deformable=case != "detr")
    assert any(k.startswith("backbone.0.body.layer4") for k in state)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-4), "epoch": 49}, path)
    c = hf.config
    sizes = {
        "depth": 18,
        "hidden_dim": c.d_model,
        "nheads": c.encoder_attention_heads,
        "enc_layers": c.encoder_layers,
        "dec_layers": c.decoder_layers,
        "ffn_dim": c.encoder_ffn_dim,
        "num_queries": c.num_queries if case == "detr" else c.two_stage_num_proposals,
    }
    model = load_official_checkpoint(path, variant, **sizes).double()
    assert model.config.num_classes == c.num_labels
    pixels, mask = padded_batch(SIZES)
    with torch.no_grad():
        expected = hf.double()(pixel_values=pixels, pixel_mask=mask)
        got = model(pixels, mask)
    torch.testing.assert_close(got["pred_logits"], expected.logits, atol=TOL, rtol=0)
    torch.testing.assert_close(got["pred_boxes"], expected.pred_boxes, atol=TOL, rtol=0)
