"""The one tiny model size of the test suite, random weights and random inputs."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

# The sizes of every test model, DETR or Deformable DETR, so the suite stays fast on
# 2 cores: a random ResNet-18, hidden 32, 2 heads, 1 encoder and 2 decoder layers.
TINY: dict[str, Any] = {
    "depth": 18,
    "hidden_dim": 32,
    "nheads": 2,
    "enc_layers": 1,
    "dec_layers": 2,
    "ffn_dim": 64,
}
NUM_CLASSES = 5
NUM_QUERIES = 6
# Input sizes of the batched tests: one landscape, one portrait image.
SIZES = [(64, 96), (80, 56)]


def tiny_model(name: str = "ddetr", seed: int = 0, **overrides: Any) -> nn.Module:
    """Variant ``name`` at :data:`TINY` size with ``NUM_CLASSES`` classes and
    ``NUM_QUERIES`` queries (unless overridden), initialised from ``seed``."""
    import zoo

    torch.manual_seed(seed)
    sizes = {**TINY, "num_classes": NUM_CLASSES, "num_queries": NUM_QUERIES}
    return zoo.create_model(name, **{**sizes, **overrides})


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
