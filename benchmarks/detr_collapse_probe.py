"""Is a trained DETR collapsed? Its outputs and cross-attention on a few images.

A DETR whose decoder ignores the image predicts the same box and class for every query of
every image (the class loss then sits at the class-prior optimum). This probe measures that
directly on a checkpoint (any ``zoo.load`` source of the DETR family):

- the spread of the predicted boxes and logits over queries and over images (0: collapsed);
- the entropy of the last decoder layer's cross-attention against the uniform entropy
  ``log(S)`` over the ``S`` image tokens (equal: the queries attend nowhere in particular);
- the spread of the backbone's map, the projected map and the encoder output over tokens
  and over images (how much the image varies what the decoder reads).

    python benchmarks/detr_collapse_probe.py RUN/checkpoints/step-00001000 IMAGES_DIR \
        [--images 8] [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def spread(x: Tensor, over: int) -> float:
    """Mean standard deviation of ``x`` along dimension ``over``."""
    return float(x.std(dim=over).mean())


def probe(source: str, images: list[Path]) -> dict[str, Any]:
    """Collapse statistics of the DETR ``source`` on ``images`` (at least two)."""
    import zoo
    from zoo.models.pipeline.preprocess import preprocess_for

    if len(images) < 2:
        raise ValueError(f"images: need at least 2 to compare, got {len(images)}")
    model = zoo.load(source).eval()
    if not hasattr(model.transformer, "decoder") or not hasattr(model, "query_embed"):
        raise ValueError(f"{source}: not a DETR (softmax family) model")
    config = model.config
    batch = preprocess_for(config, [str(p) for p in images])
    pixels, mask = batch.pixel_values, batch.pixel_mask
    # One forward pass: the backbone's map, its projection and the last cross-attention's
    # inputs are read on the way.
    seen: dict[str, Any] = {}
    last = model.transformer.decoder[-1].cross_attn
    hooks = [
        last.register_forward_hook(lambda m, args, out: seen.update(last=args)),
        model.input_proj.register_forward_hook(
            lambda m, args, out: seen.update(feats=args[0], src=out)
        ),
    ]
    with torch.no_grad():
        out = model(pixels, mask)
        for hook in hooks:
            hook.remove()
        feats = seen["feats"]  # (N, C_backbone, H, W)
        src = seen["src"].flatten(2).transpose(1, 2)  # (N, S, C)
        query, key, value = seen["last"][:3]
        _, weights = last(query, key, value, need_weights=True, average_attn_weights=True)
    tokens = weights.shape[-1]
    entropy = float(-(weights.clamp_min(1e-12).log() * weights).sum(-1).mean())
    boxes, logits = out["pred_boxes"], out["pred_logits"]
    return {
        "source": source,
        "images": len(images),
        "tokens": tokens,
        "cross_attention_entropy": entropy,
        "uniform_entropy": math.log(tokens),
        "cross_attention_max_weight": float(weights.max(-1).values.mean()),
        "boxes_spread_over_queries": spread(boxes, 1),
        "boxes_spread_over_images": spread(boxes.mean(1), 0),
        "logits_spread_over_queries": spread(logits, 1),
        "logits_spread_over_images": spread(logits.mean(1), 0),
        "backbone_spread_over_tokens": spread(feats.flatten(2), 2),
        "backbone_spread_over_images": spread(feats.flatten(2).mean(2), 0),
        "projected_spread_over_tokens": spread(src, 1),
        "memory_spread_over_tokens": spread(value, 1),
        "memory_spread_over_images": spread(value.mean(1), 0),
    }


def stage_spreads(source: str, images: list[Path]) -> list[dict[str, Any]]:
    """How much each backbone stage (C2..C5) of model ``source`` varies over tokens and images.

    The same measures as :func:`probe`'s ``backbone_*`` (the map DETR reads is one of
    these): per stage its stride, channels, mean magnitude, spread over the tokens of an
    image, and spread over the images of the token-averaged map.
    """
    import zoo
    from zoo.models.pipeline.preprocess import preprocess_for

    if len(images) < 2:
        raise ValueError(f"images: need at least 2 to compare, got {len(images)}")
    model = zoo.load(source).eval()
    batch = preprocess_for(model.config, [str(p) for p in images])
    with torch.no_grad():
        stages = model.backbone.body(batch.pixel_values)
    size = batch.pixel_values.shape[-1]
    rows = []
    for i, feats in enumerate(stages):
        flat = feats.flatten(2)  # (N, C, S)
        rows.append(
            {
                "stage": f"C{i + 2}",
                "stride": size // feats.shape[-1],
                "channels": feats.shape[1],
                "magnitude": float(flat.abs().mean()),
                "spread_over_tokens": spread(flat, 2),
                "spread_over_images": spread(flat.mean(2), 0),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a DETR checkpoint folder or name (zoo.load)")
    parser.add_argument("images", type=Path, help="a folder of images")
    parser.add_argument("--images", dest="count", type=int, default=8, help="how many")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    result = probe(args.model, files[: args.count])
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
