"""``zoo train --compile``: the training step under ``torch.compile``.

The transformer (DETR's encoder-decoder; Deformable DETR's encoder and decoder, whose
deformable attention is a registered custom op) compiles as whole graphs
(``fullgraph=True``: a graph break there is a bug, raised at the first step). The rest of
the model and the criterion compile with breaks allowed; the matcher is the one
deliberate break (:meth:`~zoo.loss.matcher.HungarianMatcher.match_all` runs eagerly:
it copies the costs to the host and solves them in Rust).

Modules are compiled in place (``nn.Module.compile``), so parameter names, checkpoints
and optimizer groups are those of the eager model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["compile_for_training", "fullgraph_parts"]


def fullgraph_parts(model: nn.Module) -> dict[str, nn.Module]:
    """The submodules of a zoo detector that compile without graph breaks, by name.

    Raises:
        TypeError: ``model`` is not a zoo DETR or Deformable DETR.
    """
    if hasattr(model, "transformer"):  # DETR
        return {"transformer": model.transformer}
    if hasattr(model, "encoder") and hasattr(model, "decoder"):  # Deformable DETR
        return {"encoder": model.encoder, "decoder": model.decoder}
    raise TypeError(f"not a zoo detector: {type(model).__name__}")


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
