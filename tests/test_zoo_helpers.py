"""Helpers shared by the zoo tests (no tests here): tiny sizes, random weights, inputs."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

# Tiny sizes: every test model shares them so the suite stays fast on 2 cores.
TINY = {"hidden_dim": 32, "nheads": 4, "enc_layers": 1, "dec_layers": 2, "ffn_dim": 48}
NUM_CLASSES = 5
NUM_QUERIES = 6


def hf_kwargs(deformable: bool, **extra: Any) -> dict[str, Any]:
    """transformers config arguments matching ``TINY`` with a random timm ResNet-18."""
    kw: dict[str, Any] = {
        "use_timm_backbone": True,
        "backbone": "resnet18",
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


def randomize_(model: nn.Module, seed: int = 0) -> None:
    """Overwrite every float weight and buffer with random values of sensible scale.

    transformers initialises many tensors to zero or constants (sampling offsets,
    attention weights, last box layer, norms); randomising all of them makes the
    comparisons sensitive to every weight.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        seen: set[int] = set()
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point() or id(t) in seen:
                continue
            seen.add(id(t))
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.dim() >= 2:
                fan_in = math.prod(t.shape[1:])
                t.copy_(torch.randn(t.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("weight"):
                t.copy_(1 + 0.2 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.2 * torch.randn(t.shape, generator=gen))


def padded_batch(sizes: list[tuple[int, int]], seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random float64 images of ``sizes`` zero-padded into one batch, with a real-pixel mask."""
    gen = torch.Generator().manual_seed(seed)
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    pixels = torch.zeros(len(sizes), 3, h, w, dtype=torch.float64)
    mask = torch.zeros(len(sizes), h, w, dtype=torch.long)
    for i, (hi, wi) in enumerate(sizes):
        pixels[i, :, :hi, :wi] = torch.randn(3, hi, wi, generator=gen, dtype=torch.float64)
        mask[i, :hi, :wi] = 1
    return pixels, mask


def random_targets(batch: int, seed: int = 0) -> list[dict[str, Tensor]]:
    """A few random boxes (normalised cxcywh) and labels per image; one image has none."""
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for i in range(batch):
        n = 0 if i == batch - 1 and batch > 2 else 1 + i % 3
        cxcy = 0.2 + 0.6 * torch.rand(n, 2, generator=gen, dtype=torch.float64)
        wh = 0.05 + 0.3 * torch.rand(n, 2, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
        targets.append({"labels": labels, "boxes": torch.cat([cxcy, wh], -1)})
    return targets


TOL = 1e-6  # float64 outputs of the zoo and transformers on the same weights
SIZES = [(64, 96), (80, 56)]

# name -> (deformable, extra transformers config arguments)
CASES = {
    "detr": (False, {}),
    "ddetr-single-scale": (True, {"num_feature_levels": 1}),
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
