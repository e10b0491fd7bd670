"""Class and box heads of Deformable DETR: shared by all layers, or one pair per layer."""

from __future__ import annotations

import copy

from torch import nn

from zoo.models.parts.heads import MLP, box_head, init_box_head, init_focal_class_head


class DeformableHeads(nn.Module):
    """Interface: the heads of decoder layer ``i``, and those that refine boxes."""

    def for_layer(self, i: int) -> tuple[nn.Linear, MLP]:
        """The (class head, box head) applied to decoder layer ``i``'s output."""
        raise NotImplementedError

    def refine_heads(self) -> list[nn.Module] | None:
        """Box heads that move each decoder layer's reference, or None (no refinement)."""
        return None

    def encoder_heads(self) -> tuple[nn.Linear, MLP]:
        """The (class head, box head) scoring the encoder's proposals (two-stage)."""
        raise ValueError(f"{type(self).__name__} has no encoder (proposal) heads")


class SharedHeads(DeformableHeads):
    """One class head and one box head applied to the output of every decoder layer."""

    def __init__(self, hidden_dim: int, num_classes: int) -> None:
        super().__init__()
        self.class_embed = nn.Linear(hidden_dim, num_classes)
        self.bbox_embed = box_head(hidden_dim)
        init_focal_class_head(self.class_embed)
        init_box_head(self.bbox_embed, size_bias=-2.0)

    def for_layer(self, i: int) -> tuple[nn.Linear, MLP]:
        return self.class_embed, self.bbox_embed


class PerLayerHeads(DeformableHeads):
    """Independent heads per decoder layer; their box heads refine the references.

    With ``encoder_head=True`` one more pair scores and regresses the encoder's
    proposals (two-stage); like the official release, its box heads then start with
    zero size bias.
    """

    def __init__(
        self, hidden_dim: int, num_classes: int, num_layers: int, encoder_head: bool = False
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        class_head = nn.Linear(hidden_dim, num_classes)
        init_focal_class_head(class_head)
        bbox = box_head(hidden_dim)
        init_box_head(bbox, size_bias=0.0 if encoder_head else -2.0)
        count = num_layers + int(encoder_head)
        self.class_embed = nn.ModuleList(copy.deepcopy(class_head) for _ in range(count))
        self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox) for _ in range(count))
        if not encoder_head:
            # The official code re-initialises only the first copy (the others keep 0).
            for head in list(self.bbox_embed)[1:]:
                init_box_head(head, size_bias=0.0)  # type: ignore[arg-type]

    def for_layer(self, i: int) -> tuple[nn.Linear, MLP]:
        return self.class_embed[i], self.bbox_embed[i]  # type: ignore[return-value]

    def refine_heads(self) -> list[nn.Module] | None:
        return list(self.bbox_embed)[: self.num_layers]

    def encoder_heads(self) -> tuple[nn.Linear, MLP]:
        if len(self.class_embed) == self.num_layers:
            return super().encoder_heads()
        return self.class_embed[-1], self.bbox_embed[-1]  # type: ignore[return-value]
