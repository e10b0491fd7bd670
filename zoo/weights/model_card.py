"""The README.md written beside saved weights: Hub metadata, architecture, how to load."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.models.registry.catalog import get_variant

# Hub tags of each family's model card.
CARD_TAGS = {
    "detr": ("object-detection", "detr", "zoo"),
    "deformable": ("object-detection", "detr", "zoo", "deformable-detr"),
}


def model_card(model: nn.Module, config_data: dict[str, Any]) -> str:
    """A Hugging Face model card (YAML front matter + Markdown) for a saved ``model``.

    Args:
        model: the saved model; its ``source`` attribute (set by :func:`zoo.load`),
            if any, names the weights it was loaded from.
        config_data: the ``config.json`` content written beside it.
    """
    variant = config_data.get("variant")
    info = get_variant(variant) if variant else None
    config = config_data["config"]
    num_params = sum(p.numel() for p in model.parameters())
    source = getattr(model, "source", None)
    tags = CARD_TAGS[config_data["family"]]
    front = ["---", f"license: {(info.license if info else None) or 'other'}".lower()]
    front += ["library_name: zoo", "pipeline_tag: object-detection", "tags:"]
    front += [f"- {t}" for t in tags]
    front.append("---")
    title = variant or f"{config_data['family']} detector"
    lines = [
        f"# {title}",
        "",
        (info.description + "." if info else f"A {config_data['family']} detector.")
        + f" {config['num_classes']} classes, {num_params / 1e6:.1f}M parameters.",
        "",
    ]
    if info and info.paper:
        lines += [f"Paper: {info.paper}.", ""]
    if source:
        lines += [f"Weights from `{source}`.", ""]
    if info and info.coco_ap is not None and config["num_classes"] == info.config.num_classes:
        lines += [f"Published COCO val2017 box AP of the original weights: {info.coco_ap}.", ""]
    lines += [
        "## Usage",
        "",
        "```python",
        "import zoo",
        "",
        'model = zoo.load("path/or/org-name")  # this folder or its Hub repository',
        "detections = model.predict([image], threshold=0.5)  # boxes xyxy, scores, labels",
        "```",
        "",
        "## Configuration",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for key, value in config.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        lines.append(f"| {key} | {value} |")
    lines += [
        "",
        f"Format: zoo v{config_data['format_version']} (`config.json` + `model.safetensors`).",
    ]
    return "\n".join(front + lines) + "\n"
