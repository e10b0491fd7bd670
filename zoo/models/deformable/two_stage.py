"""Two-stage Deformable DETR: every encoder pixel proposes a box; the top-k become queries."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.models.deformable.heads import DeformableHeads
from zoo.models.deformable.multiscale import FlatLevels
from zoo.models.deformable.queries import DecoderQueries, QuerySource
from zoo.models.parts.position_encoding import box_sine_encoding


def encoder_proposals(memory: Tensor, levels: FlatLevels) -> tuple[Tensor, Tensor]:
    """One fixed anchor box per pixel, and which pixels may propose.

    Each anchor is centred on its pixel (normalised to the real image area) with side
    0.05 * 2^level. Anchors of padding pixels or touching the border (any coordinate
    outside (0.01, 0.99)) are invalid.

    Returns:
        ``proposals`` (N, S, 4) as logits (inverse sigmoid of cxcywh), +inf where
        invalid; ``valid`` (N, S, 1) bool.
    """
    n = memory.shape[0]
    proposals = []
    start = 0
    for lvl, (h, w) in enumerate(levels.shapes):
        pad = levels.padding_mask[:, start : start + h * w].view(n, h, w)
        valid_h = (~pad[:, :, 0]).sum(1)
        valid_w = (~pad[:, 0, :]).sum(1)
        # arange, not linspace: the same values, and h, w stay symbolic under torch.export.
        ys = torch.arange(h, dtype=memory.dtype, device=memory.device)
        xs = torch.arange(w, dtype=memory.dtype, device=memory.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([grid_x, grid_y], -1)  # (H, W, 2) as (x, y)
        scale = torch.stack([valid_w, valid_h], -1).view(n, 1, 1, 2)
        centres = (grid.unsqueeze(0) + 0.5) / scale
        sizes = torch.full_like(centres, 0.05 * (2.0**lvl))
        proposals.append(torch.cat([centres, sizes], -1).view(n, -1, 4))
        start += h * w
    boxes = torch.cat(proposals, 1)
    valid = ((boxes > 0.01) & (boxes < 0.99)).all(-1, keepdim=True)
    logits = torch.log(boxes / (1 - boxes))
    logits = logits.masked_fill(levels.padding_mask.unsqueeze(-1), float("inf"))
    logits = logits.masked_fill(~valid, float("inf"))
    return logits, valid & ~levels.padding_mask.unsqueeze(-1)


class TwoStageQueries(QuerySource):
    """Queries from the ``num_queries`` best encoder proposals (by their class-0 logit).

    The proposals are scored and regressed by the heads' encoder pair; the selected
    boxes (detached) are the decoder's initial references, and their sine encoding,
    projected, gives both the query position and content.
    """

    def __init__(self, num_queries: int, hidden_dim: int) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        self.enc_output = nn.Linear(hidden_dim, hidden_dim)
        self.enc_output_norm = nn.LayerNorm(hidden_dim)
        self.pos_trans = nn.Linear(2 * hidden_dim, 2 * hidden_dim)
        self.pos_trans_norm = nn.LayerNorm(2 * hidden_dim)

    def forward(self, memory: Tensor, levels: FlatLevels, heads: DeformableHeads) -> DecoderQueries:
        """memory (N, S, C) -> queries, plus ``enc_outputs`` for the proposal loss."""
        proposals, valid = encoder_proposals(memory, levels)
        features = memory.masked_fill(~valid, 0.0)
        features = self.enc_output_norm(self.enc_output(features))
        class_head, box_head = heads.encoder_heads()
        enc_logits = class_head(features)  # (N, S, num_classes)
        enc_coords = box_head(features) + proposals  # (N, S, 4) logits
        k = min(self.num_queries, enc_coords.shape[1])
        top = torch.topk(enc_logits[..., 0], k, dim=1)[1]
        top_coords = torch.gather(enc_coords, 1, top.unsqueeze(-1).expand(-1, -1, 4)).detach()
        reference_points = top_coords.sigmoid()
        embed = box_sine_encoding(reference_points, self.hidden_dim // 2)
        query_pos, tgt = self.pos_trans_norm(self.pos_trans(embed)).split(self.hidden_dim, dim=2)
        enc_outputs = {"pred_logits": enc_logits, "pred_boxes": enc_coords.sigmoid()}
        return DecoderQueries(tgt, query_pos, reference_points, enc_outputs)
