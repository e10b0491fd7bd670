"""Official-repository checkpoints (.pth) load into the zoo and reproduce transformers.

transformers' Hub checkpoints were converted from the official ones; the test runs that
conversion backwards (official names as in facebookresearch/detr and
fundamentalvision/Deformable-DETR) on a random transformers model, saves a ``.pth`` like
the training scripts do, and requires the zoo model loaded from it to equal transformers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from support.tiny import SIZES, padded_batch
from support.transformers_models import TOL, build_hf, to_official

from zoo.weights.official_format import load_official_checkpoint

pytest.importorskip("transformers")


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
