"""The convergence benchmark's protocol: the variants, their sizes and rates, the data.

Every setting here is a flag of ``bench_convergence.py``; :func:`protocol_of` is what a
run file records, so that a later call can tell a finished run of the same protocol.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

VARIANTS = ("detr-r50-dc5", "ddetr-single-scale", "ddetr", "ddetr-refine", "ddetr-two-stage")
# Every variant gets the same small backbone here, so DETR is named without its ResNet.
LABELS = {"detr-r50-dc5": "detr"}
# Settings that do not change what a run computes (only where and how fast).
NOT_PROTOCOL = (
    *("quick", "variants", "seeds", "jobs", "threads", "no_progress", "name", "output"),
    "workdir",
    "data_spec",  # recorded as "dataset" (the multi-size runs' record predates the flag)
)


DATA_SPECS = ("multi-size", "demo")
DATASET_NAMES = {
    "multi-size": "zoo.data.shapes ShapesSpec.multi_size",
    "demo": "zoo.data.shapes ShapesSpec()",
}


def data_spec(name: str, size: int) -> Any:
    """The shapes generator's setting called ``name`` at ``size`` pixels."""
    from zoo.data.shapes import ShapesSpec

    return ShapesSpec.multi_size(size) if name == "multi-size" else ShapesSpec(size=size)


def label(name: str) -> str:
    """The name a variant has in the results."""
    return LABELS.get(name, name)


def is_multi_scale(name: str) -> bool:
    return name.startswith("ddetr") and name != "ddetr-single-scale"


def model_overrides(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """One small size for every variant (DETR has no levels or sampling points)."""
    from zoo.data.shapes import CLASSES

    sizes: dict[str, Any] = {
        "depth": 18,
        "width": args.width,
        "norm": "group",
        "hidden_dim": args.hidden,
        "nheads": 4,
        "enc_layers": args.enc_layers,
        "dec_layers": args.dec_layers,
        "ffn_dim": 4 * args.hidden,
        "num_queries": args.queries,
        "num_classes": len(CLASSES),
        "class_names": CLASSES,
        "image_size": args.size,
        "dropout": args.dropout,
        # DC5 for the models that read one map (DETR, single-scale Deformable DETR).
        "dilation": args.dc5 and not is_multi_scale(name),
    }
    if name.startswith("ddetr"):
        sizes.update(num_levels=3 if is_multi_scale(name) else 1)
    return sizes


def rates(args: argparse.Namespace, name: str) -> tuple[float, float]:
    """The family's (rate, backbone rate).

    DETR: ``--detr-lr`` (1e-4), Deformable DETR: ``--lr`` (2e-4): the official rates,
    neither scaled to the batch (the pilot: at 2e-4 * 8 / 32 single-scale Deformable DETR
    had not learnt when its rate dropped). The backbone gets a tenth (the papers' ratio for
    a pretrained one), all of the rate from scratch.
    """
    detr = name.startswith("detr")
    if detr:
        lr = args.detr_lr
    else:
        lr = args.lr
    given = args.detr_lr_backbone if detr else args.lr_backbone
    if given is not None:
        return lr, float(given)
    return lr, (lr if args.backbone == "scratch" else lr / 10)


def load_backbone(model: Any, source: str) -> None:
    """Copy the backbone of model ``source`` (a name or folder for ``zoo.load``) into ``model``.

    The stand-in for the papers' ImageNet-pretrained ResNet: every variant starts from the
    same trained feature extractor (a dilated trunk has the same weights). Raises
    ValueError when the backbones differ in shape.
    """
    import zoo

    donor = zoo.load(source).backbone.state_dict()
    target = model.backbone.state_dict()
    shapes = {k: tuple(v.shape) for k, v in target.items()}
    if {k: tuple(v.shape) for k, v in donor.items()} != shapes:
        raise ValueError(
            f"--backbone {source}: its backbone does not match the benchmark's "
            f"(ResNet-{model.config.backbone.depth}, width {model.config.backbone.width})"
        )
    model.backbone.load_state_dict(donor)


def epochs_for(name: str, args: argparse.Namespace) -> int:
    """DETR's own budget, or the common one."""
    return args.detr_epochs if name.startswith("detr") and args.detr_epochs else args.epochs


def dataset_stats(data: Path, size: int) -> dict[str, Any]:
    """Images, objects and objects per size bucket in each split."""
    from zoo.data.areas import bucket_counts

    stats = {}
    for split in ("train", "val"):
        coco = json.loads((data / "annotations" / f"{split}.json").read_text())
        areas = [a["area"] for a in coco["annotations"]]
        stats[split] = {
            "images": len(coco["images"]),
            "objects": len(areas),
            "buckets": bucket_counts(areas, size),
        }
    return stats


def read_stage(model: Any, stage: int) -> None:
    """Make DETR ``model`` read backbone stage ``stage`` (3: C4, 2: C3) instead of C5.

    A pilot's knob (``--detr-stage``): the trunk keeps its (loaded) weights, the stages
    after ``stage`` go unused, and the input projection is rebuilt for the stage's
    channels. Raises ValueError for a model without DETR's single map or a stage outside
    2..4.
    """
    from torch import nn

    from zoo.models.parts.backbone import Backbone

    if not 2 <= stage <= 4:
        raise ValueError(f"--detr-stage must be 2, 3 or 4 (C3, C4, C5), got {stage}")
    if not hasattr(model, "query_embed") or not isinstance(model.input_proj, nn.Conv2d):
        raise ValueError("--detr-stage: only DETR reads a single backbone map")
    if stage == 4:
        return
    trunk = model.backbone.state_dict()
    model.backbone = Backbone(model.config.backbone, return_stages=(stage,))
    model.backbone.load_state_dict(trunk)
    old = model.input_proj
    model.input_proj = nn.Conv2d(model.backbone.num_channels[-1], old.out_channels, 1)


def protocol_of(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting that changes what a run computes, with the derived rates and epochs."""
    from zoo.data.areas import size_buckets

    settings = {k: v for k, v in vars(args).items() if k not in NOT_PROTOCOL}
    if settings.get("detr_stage") == 4:
        # The default map (C5): recorded only when a pilot changes it, so that runs made
        # before the flag existed stay runs of the same protocol.
        del settings["detr_stage"]
    small, large = size_buckets(args.size)
    return {
        **settings,
        "dataset": DATASET_NAMES[args.data_spec],
        "area_thresholds": {"small_below": small, "large_from": large},
        "epochs_per_variant": {label(n): epochs_for(n, args) for n in VARIANTS},
        "rates": {label(n): list(rates(args, n)) for n in VARIANTS},
        "dc5": {label(n): model_overrides(args, n)["dilation"] for n in VARIANTS},
    }
