"""Where Deformable DETR's decoder queries come from: learned embeddings (one-stage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from zoo.models.deformable.heads import DeformableHeads
from zoo.models.deformable.multiscale import FlatLevels


@dataclass
class DecoderQueries:
    """``tgt``, ``query_pos`` (N, Q, C); ``reference_points`` (N, Q, 2|4) normalised to
    the real image area; ``enc_outputs`` the encoder's proposal predictions (two-stage)."""

    tgt: Tensor
    query_pos: Tensor
    reference_points: Tensor
    enc_outputs: dict[str, Any] | None = None


class QuerySource(nn.Module):
    """Interface: the decoder's queries, from the encoder's output."""

    def forward(self, memory: Tensor, levels: FlatLevels, heads: DeformableHeads) -> DecoderQueries:
        """memory (N, S, C) and its levels -> queries; ``heads`` may score proposals."""
        raise NotImplementedError


class LearnedQueries(QuerySource):
    """``Q`` learned (position, content) pairs; each position predicts a reference point."""

    def __init__(self, num_queries: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.query_embed = nn.Embedding(num_queries, 2 * hidden_dim)
        self.reference_points = nn.Linear(hidden_dim, 2)
        nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
        nn.init.zeros_(self.reference_points.bias)

    def forward(self, memory: Tensor, levels: FlatLevels, heads: DeformableHeads) -> DecoderQueries:
        """The same queries for every image of the batch (``memory`` (N, S, C) gives N)."""
        n = memory.shape[0]
        query_pos, tgt = self.query_embed.weight.split(self.hidden_dim, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(n, -1, -1)
        tgt = tgt.unsqueeze(0).expand(n, -1, -1)
        return DecoderQueries(tgt, query_pos, self.reference_points(query_pos).sigmoid())
