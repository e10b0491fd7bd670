"""``zoo train --compile``: the training step under ``torch.compile``.

The transformer (DETR's encoder-decoder; Deformable DETR's encoder and decoder, whose
deformable attention is a registered custom op) compiles as whole graphs
(``fullgraph=True``: a graph break there is a bug, raised at the first step). The rest of
the model and the criterion compile with breaks allowed; the matcher is the one
deliberate break (:meth:`~zoo.loss.matcher.HungarianMatcher.match_all` runs eagerly:
it copies the costs to the host and solves them in Rust).

Modules are compiled in place (``nn.Module.compile``), so parameter names, checkpoints
and optimizer groups are those of the eager model.

:func:`pad_to_bucket` is the static-shape option (``zoo train --size-bucket``): every batch
padded to a multiple of a fixed size, so the compiled graphs see a few shapes (and CUDA
graphs become possible); its cost is the extra padded pixels
(``benchmarks/bench_static_shapes.py`` measures it).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["compile_for_training", "fullgraph_parts", "pad_to_bucket"]


def pad_to_bucket(pixel_values: Tensor, pixel_mask: Tensor, bucket: int) -> tuple[Tensor, Tensor]:
    """Pad a batch (right and bottom) to the next multiple of ``bucket`` in height and width.

    The padding is zero pixels masked as padding, like the padding between a batch's
    images: the models see only the real area (boxes are normalised to it).

    Args:
        pixel_values: (N, 3, H, W).
        pixel_mask: (N, H, W), 1 on real pixels.
        bucket: pixels, a positive int (a multiple of the backbone stride, 32, keeps
            every feature map's size fixed too).

    Returns:
        (N, 3, H', W') and (N, H', W') with H', W' the multiples of ``bucket`` at or above.
    """
    if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 1:
        raise ValueError(f"bucket must be a positive int (pixels), got {bucket!r}")
    h, w = pixel_values.shape[-2:]
    pad_h, pad_w = -h % bucket, -w % bucket
    if pad_h == 0 and pad_w == 0:
        return pixel_values, pixel_mask
    return F.pad(pixel_values, (0, pad_w, 0, pad_h)), F.pad(pixel_mask, (0, pad_w, 0, pad_h))


def fullgraph_parts(model: nn.Module) -> dict[str, nn.Module]:
    """The submodules of a zoo detector that compile without graph breaks, by name.

    Raises:
        TypeError: ``model`` is not a zoo DETR or Deformable DETR.
    """
    # DETR's encoder-decoder is one module; Deformable DETR's are two.
    names = ("transformer",) if hasattr(model, "transformer") else ("encoder", "decoder")
    parts: dict[str, nn.Module] = {}
    for name in names:
        part = getattr(model, name, None)
        if not isinstance(part, nn.Module):
            raise TypeError(f"not a zoo detector: {type(model).__name__}")
        parts[name] = part
    return parts


def compile_for_training(model: nn.Module, criterion: Any, **options: Any) -> None:
    """Compile ``model`` and ``criterion`` in place for training.

    Args:
        model: a zoo detector.
        criterion: its loss (a :class:`~zoo.loss.criterion.SetCriterion`; anything that
            is not an ``nn.Module`` is left eager).
        options: passed to every ``compile`` call (``backend``, ``mode``, ``dynamic``).
    """
    whole = fullgraph_parts(model)
    for part in whole.values():
        part.compile(fullgraph=True, **options)
    for name, child in model.named_children():
        if name not in whole and any(True for _ in child.parameters()):
            child.compile(**options)
    if isinstance(criterion, nn.Module):
        criterion.compile(**options)
