"""The registered variants: official configurations and their checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo.models.config import BackboneConfig, DeformableDetrConfig, DetrConfig, ModelConfig
from zoo.models.registry.catalog import register_bundled, register_variant

ConfigFactory = Callable[[], ModelConfig]

_DETR_PAPER = "End-to-End Object Detection with Transformers (Carion et al., ECCV 2020)"
_DDETR_PAPER = "Deformable DETR (Zhu et al., ICLR 2021)"

# Hub commits, as recorded by projects that pinned and hash-checked these checkpoints
# (the model.safetensors of each commit). Those of detr-resnet-101 and the two DC5
# checkpoints are not known here (these machines cannot reach the Hub): their default
# branch is used until someone pins them.
_REVISIONS = {
    "facebook/detr-resnet-50": "1d5f47bd3bdd2c4bbfa585418ffe6da5028b4c0b",
    "facebook/detr-resnet-101": None,
    "facebook/detr-resnet-50-dc5": None,
    "facebook/detr-resnet-101-dc5": None,
    "SenseTime/deformable-detr-single-scale": "e880a4ca7bbe47b33d37ed90e2948efbbdad0d44",
    "SenseTime/deformable-detr": "83ecd26945199939cb82806f988debdb71e6f43e",
    "SenseTime/deformable-detr-with-box-refine": "2e9e461623a8fdc296e19666c46c8a4389a3a6fe",
    "SenseTime/deformable-detr-with-box-refine-two-stage": (
        "e74bff70d69f3e825f6cefaf179bfba707f92054"
    ),
}
# All eight model cards declare Apache-2.0 (as do both original repositories).
_LICENSE = "Apache-2.0"


def _official(
    name: str, *, hf_hub_id: str, **fields: Any
) -> Callable[[ConfigFactory], ConfigFactory]:
    """``register_variant`` for an official checkpoint: its pinned revision and license."""
    return register_variant(
        name, hf_hub_id=hf_hub_id, hf_revision=_REVISIONS[hf_hub_id], license=_LICENSE, **fields
    )


@_official(
    "detr-r50",
    description="DETR, ResNet-50, 100 queries, 6+6 layers (42.0 AP on COCO val)",
    hf_hub_id="facebook/detr-resnet-50",
    paper=_DETR_PAPER,
    coco_ap=42.0,
)
def detr_r50() -> DetrConfig:
    return DetrConfig(backbone=BackboneConfig(depth=50))


@_official(
    "detr-r101",
    description="DETR, ResNet-101, 100 queries, 6+6 layers (43.5 AP on COCO val)",
    hf_hub_id="facebook/detr-resnet-101",
    paper=_DETR_PAPER,
    coco_ap=43.5,
)
def detr_r101() -> DetrConfig:
    return DetrConfig(backbone=BackboneConfig(depth=101))


@_official(
    "detr-r50-dc5",
    description="DETR-DC5, ResNet-50 with a dilated C5 (stride 16), 100 queries (43.3 AP)",
    hf_hub_id="facebook/detr-resnet-50-dc5",
    paper=_DETR_PAPER,
    coco_ap=43.3,
)
def detr_r50_dc5() -> DetrConfig:
    return DetrConfig(backbone=BackboneConfig(depth=50, dilation=True))


@_official(
    "detr-r101-dc5",
    description="DETR-DC5, ResNet-101 with a dilated C5 (stride 16), 100 queries (44.9 AP)",
    hf_hub_id="facebook/detr-resnet-101-dc5",
    paper=_DETR_PAPER,
    coco_ap=44.9,
)
def detr_r101_dc5() -> DetrConfig:
    return DetrConfig(backbone=BackboneConfig(depth=101, dilation=True))


@_official(
    "ddetr-single-scale",
    description="Deformable DETR on C5 only (one level), 300 queries (39.4 AP)",
    hf_hub_id="SenseTime/deformable-detr-single-scale",
    paper=_DDETR_PAPER,
    coco_ap=39.4,
)
def ddetr_single_scale() -> DeformableDetrConfig:
    return DeformableDetrConfig(num_levels=1)


@_official(
    "ddetr",
    description="Deformable DETR, 4 levels (C3-C5 + a stride-2 conv on C5), 300 queries (44.5 AP)",
    hf_hub_id="SenseTime/deformable-detr",
    paper=_DDETR_PAPER,
    coco_ap=44.5,
)
def ddetr() -> DeformableDetrConfig:
    return DeformableDetrConfig()


@_official(
    "ddetr-refine",
    description="Deformable DETR with iterative box refinement, per-layer heads (46.2 AP)",
    hf_hub_id="SenseTime/deformable-detr-with-box-refine",
    paper=_DDETR_PAPER,
    coco_ap=46.2,
)
def ddetr_refine() -> DeformableDetrConfig:
    return DeformableDetrConfig(with_box_refine=True)


@_official(
    "ddetr-two-stage",
    description="Two-stage Deformable DETR with box refinement: top-k encoder proposals as queries (46.9 AP)",
    hf_hub_id="SenseTime/deformable-detr-with-box-refine-two-stage",
    paper=_DDETR_PAPER,
    coco_ap=46.9,
)
def ddetr_two_stage() -> DeformableDetrConfig:
    return DeformableDetrConfig(with_box_refine=True, two_stage=True)


# Trained by this project (make demo-model): a small two-stage Deformable DETR with box
# refinement for the synthetic shapes of zoo.data.shapes; shipped in the package.
register_bundled(
    "shapes-demo",
    description="two-stage Deformable DETR (2.0 M parameters) trained on synthetic shapes "
    "(AP50 0.940); bundled, offline",
    folder="pretrained/shapes-ddetr",
)
