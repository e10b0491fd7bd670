"""DETR's encoder-decoder transformer (post-norm, positions added to queries and keys)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.models.parts.heads import FeedForward


class DetrEncoderLayer(nn.Module):
    """Self-attention over image features, then the feed-forward block."""

    def __init__(self, hidden_dim: int, nheads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(
            hidden_dim, nheads, dropout=dropout, batch_first=True
        )
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.ffn = FeedForward(hidden_dim, ffn_dim, dropout)

    def forward(self, src: Tensor, pos: Tensor, padding_mask: Tensor) -> Tensor:
        """src, pos (N, S, C); padding_mask (N, S) True on padding -> (N, S, C)."""
        q = k = src + pos
        out = self.self_attn(q, k, src, key_padding_mask=padding_mask, need_weights=False)[0]
        return self.ffn(self.norm1(src + self.dropout(out)))


class DetrDecoderLayer(nn.Module):
    """Self-attention among queries, cross-attention to the image, then feed-forward."""

    def __init__(self, hidden_dim: int, nheads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(
            hidden_dim, nheads, dropout=dropout, batch_first=True
        )
        self.cross_attn = nn.MultiheadAttention(
            hidden_dim, nheads, dropout=dropout, batch_first=True
        )
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.ffn = FeedForward(hidden_dim, ffn_dim, dropout)

    def forward(
        self, tgt: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor, padding_mask: Tensor
    ) -> Tensor:
        """tgt, query_pos (N, Q, C); memory, pos (N, S, C); padding_mask (N, S) -> (N, Q, C)."""
        q = k = tgt + query_pos
        out = self.self_attn(q, k, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(out))
        out = self.cross_attn(
            tgt + query_pos, memory + pos, memory, key_padding_mask=padding_mask, need_weights=False
        )[0]
        tgt = self.norm2(tgt + self.dropout2(out))
        return self.ffn(tgt)


class DetrTransformer(nn.Module):
    """Encoder over the flattened C5 features and decoder over ``Q`` object queries."""

    def __init__(
        self,
        hidden_dim: int,
        nheads: int,
        enc_layers: int,
        dec_layers: int,
        ffn_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(
            DetrEncoderLayer(hidden_dim, nheads, ffn_dim, dropout) for _ in range(enc_layers)
        )
        self.decoder = nn.ModuleList(
            DetrDecoderLayer(hidden_dim, nheads, ffn_dim, dropout) for _ in range(dec_layers)
        )
        # One norm on every decoder output: the heads see normalised states at every layer.
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, pos: Tensor, padding_mask: Tensor, query_pos: Tensor) -> Tensor:
        """Run the encoder and decoder.

        Args:
            src: (N, S, C) projected, flattened features.
            pos: (N, S, C) position encoding of ``src``.
            padding_mask: (N, S) bool, True on padding.
            query_pos: (Q, C) learned query embeddings.

        Returns:
            (L_dec, N, Q, C): the normalised output of every decoder layer.
        """
        memory = src
        for enc in self.encoder:
            memory = enc(memory, pos, padding_mask)
        query_pos_b = query_pos.unsqueeze(0).expand(src.shape[0], -1, -1)
        # The decoder starts from zero content; the queries only carry their embeddings.
        tgt = torch.zeros_like(query_pos_b)
        states = []
        for dec in self.decoder:
            tgt = dec(tgt, query_pos_b, memory, pos, padding_mask)
            states.append(self.decoder_norm(tgt))
        return torch.stack(states)
