"""SetCriterion against transformers' DETR / Deformable DETR losses on the same predictions."""

from __future__ import annotations

import pytest
import torch
from support.tiny import NUM_CLASSES, random_targets

from zoo.loss.criterion import criterion_from_loss_config
from zoo.models.config import LossConfig

transformers = pytest.importorskip("transformers")
from transformers.loss.loss_deformable_detr import (  # noqa: E402
    DeformableDetrForObjectDetectionLoss,
)
from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss  # noqa: E402

LAYERS, BATCH, QUERIES = 3, 3, 7


def random_predictions(columns: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(LAYERS, BATCH, QUERIES, columns) logits and boxes, float64, requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(LAYERS, BATCH, QUERIES, columns, generator=gen, dtype=torch.float64)
    cxcy = 0.2 + 0.6 * torch.rand(LAYERS, BATCH, QUERIES, 2, generator=gen, dtype=torch.float64)
    wh = 0.05 + 0.4 * torch.rand(LAYERS, BATCH, QUERIES, 2, generator=gen, dtype=torch.float64)
    return logits.requires_grad_(), torch.cat([cxcy, wh], -1).requires_grad_()


def outputs_dict(logits: torch.Tensor, boxes: torch.Tensor) -> dict:
    return {
        "pred_logits": logits[-1],
        "pred_boxes": boxes[-1],
        "aux_outputs": [
            {"pred_logits": a, "pred_boxes": b}
            for a, b in zip(logits[:-1], boxes[:-1], strict=True)
        ],
    }


@pytest.mark.parametrize("family", ["detr", "deformable"])
@pytest.mark.parametrize("seed", [0, 1])
def test_losses_equal_transformers(family: str, seed: int) -> None:
    focal = family == "deformable"
    loss_cfg = LossConfig.deformable() if focal else LossConfig.detr()
    logits, boxes = random_predictions(NUM_CLASSES + (0 if focal else 1), seed)
    targets = random_targets(BATCH, seed)
    ours = criterion_from_loss_config(NUM_CLASSES, loss_cfg)(outputs_dict(logits, boxes), targets)

    hf_targets = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    common = {
        "num_labels": NUM_CLASSES,
        "decoder_layers": LAYERS,
        "auxiliary_loss": True,
        "class_cost": int(loss_cfg.cost_class),
        "bbox_cost": int(loss_cfg.cost_bbox),
        "giou_cost": int(loss_cfg.cost_giou),
        "bbox_loss_coefficient": int(loss_cfg.loss_bbox),
        "giou_loss_coefficient": int(loss_cfg.loss_giou),
    }
    if focal:
        config = transformers.DeformableDetrConfig(focal_alpha=loss_cfg.focal_alpha, **common)
        loss_fn = DeformableDetrForObjectDetectionLoss
    else:
        config = transformers.DetrConfig(eos_coefficient=loss_cfg.eos_coef, **common)
        loss_fn = ForObjectDetectionLoss
    # transformers builds its no-object weights in the default dtype: make that float64.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _, hf_losses, _ = loss_fn(logits[-1], hf_targets, "cpu", boxes[-1], config, logits, boxes)
    finally:
        torch.set_default_dtype(default)
    assert set(hf_losses) - {k for k in hf_losses if k.startswith("cardinality")} <= set(ours)
    for key, value in hf_losses.items():
        if key.startswith("cardinality"):
            continue
        assert torch.allclose(ours[key], value, atol=1e-10, rtol=1e-10), (key, ours[key], value)
    # transformers weighs loss_ce by 1; the official recipe (ours) by loss_class.
    hf_total = sum(
        v
        * (
            loss_cfg.loss_class
            if "ce" in k
            else loss_cfg.loss_bbox
            if "bbox" in k
            else loss_cfg.loss_giou
        )
        for k, v in hf_losses.items()
        if not k.startswith("cardinality")
    )
    torch.testing.assert_close(ours["loss"], hf_total, atol=1e-10, rtol=1e-10)
    ours_grad = torch.autograd.grad(ours["loss"], (logits, boxes))
    hf_grad = torch.autograd.grad(hf_total, (logits, boxes))
    for a, b in zip(ours_grad, hf_grad, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_two_stage_encoder_losses_are_class_agnostic() -> None:
    """``_enc`` losses match every target as class 0 (the official binary proposals)."""
    loss_cfg = LossConfig.deformable()
    logits, boxes = random_predictions(NUM_CLASSES, 3)
    targets = random_targets(BATCH, 3)
    outputs = outputs_dict(logits, boxes)
    outputs["enc_outputs"] = {"pred_logits": logits[0], "pred_boxes": boxes[0]}
    criterion = criterion_from_loss_config(NUM_CLASSES, loss_cfg)
    losses = criterion(outputs, targets)
    binary = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
    aux_as_binary = criterion({"pred_logits": logits[0], "pred_boxes": boxes[0]}, binary)
    for name in ("loss_ce", "loss_bbox", "loss_giou"):
        torch.testing.assert_close(losses[f"{name}_enc"], aux_as_binary[name])
    assert losses["loss_ce_enc"] != losses["loss_ce_0"]  # the labels did change
    expected = sum(
        v
        * {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}[
            k.rsplit("_", 1)[0] if k.count("_") > 1 else k
        ]
        for k, v in losses.items()
        if k != "loss"
    )
    torch.testing.assert_close(losses["loss"], expected)


def test_no_targets_gives_finite_losses() -> None:
    logits, boxes = random_predictions(NUM_CLASSES + 1, 4)
    targets = [
        {
            "labels": torch.zeros(0, dtype=torch.int64),
            "boxes": torch.zeros(0, 4, dtype=torch.float64),
        }
    ] * BATCH
    losses = criterion_from_loss_config(NUM_CLASSES, LossConfig.detr())(
        outputs_dict(logits, boxes), targets
    )
    assert torch.isfinite(losses["loss"])
    assert losses["loss_bbox"] == 0
