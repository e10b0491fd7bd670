"""Deformable DETR, assembled from parts: single-/multi-scale, box refinement, two-stage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from msda_ops import MSDeformAttn
from zoo.models.config import DeformableDetrConfig
from zoo.models.deformable.heads import DeformableHeads, PerLayerHeads, SharedHeads
from zoo.models.deformable.multiscale import MultiScaleInput
from zoo.models.deformable.queries import LearnedQueries, QuerySource
from zoo.models.deformable.transformer import DeformableDecoder, DeformableEncoder
from zoo.models.deformable.two_stage import TwoStageQueries
from zoo.models.parts.backbone import Backbone
from zoo.models.parts.box_ops import refine_boxes
from zoo.models.pipeline.detector import Detector, padding_mask_from_pixel_mask
from zoo.models.pipeline.postprocess import Predictions, postprocess_topk


class DeformableDETR(Detector):
    """Backbone -> multi-scale input -> deformable encoder -> queries -> decoder -> heads.

    The variants differ only in the parts passed in: ``queries`` (learned, or the
    encoder's top proposals) and ``heads`` (shared, or per layer and refining).
    ``pred_logits`` has ``num_classes`` sigmoid columns (no "no object" class).

    :meth:`record_sampling` keeps the deformable sampling of every forward call made
    while it is open (``zoo detect --show-sampling`` draws it).
    """

    def __init__(
        self,
        config: DeformableDetrConfig,
        backbone: Backbone,
        levels: MultiScaleInput,
        encoder: DeformableEncoder,
        decoder: DeformableDecoder,
        queries: QuerySource,
        heads: DeformableHeads,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.levels = levels
        self.encoder = encoder
        self.decoder = decoder
        self.queries = queries
        self.heads = heads
        self._recorded: list[dict[str, Any]] | None = None

    @contextlib.contextmanager
    def record_sampling(self) -> Iterator[list[dict[str, Any]]]:
        """Record where the decoder looked, in every forward call made inside the block.

        Each call runs as with ``output_sampling=True`` and appends its output dict to
        the yielded list; callers (such as ``predict``) run unchanged, and their own
        results are not affected::

            with model.record_sampling() as calls:
                detections = model.predict(images)
            locations = calls[-1]["sampling_locations"][-1]  # the last decoder layer
        """
        recorded: list[dict[str, Any]] = []
        self._recorded = recorded
        try:
            yield recorded
        finally:
            self._recorded = None

    def forward(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None, output_sampling: bool = False
    ) -> dict[str, Any]:
        """Detect objects.

        Args:
            pixel_values: (N, 3, H, W) ImageNet-normalised images.
            pixel_mask: (N, H, W), 1/True on real pixels; None: no padding.
            output_sampling: also return the decoder cross-attention's sampling (on by
                itself inside :meth:`record_sampling`).

        Returns:
            ``pred_logits`` (N, Q, num_classes), ``pred_boxes`` (N, Q, 4) normalised
            cxcywh, ``aux_outputs`` (per decoder layer but the last); two-stage adds
            ``enc_outputs`` (``pred_logits`` (N, S, num_classes), ``pred_boxes`` (N, S, 4)
            for every encoder pixel); ``output_sampling`` adds ``sampling_locations``
            (L_dec, N, Q, M, L, P, 2) and ``attention_weights`` (L_dec, N, Q, M, L, P),
            both in each level's padded frame, the last layer's ``reference_points``
            (N, Q, 2|4) normalised to the real image area, and the levels'
            ``valid_ratios`` (N, L, 2) (real fraction of each level's width and height).
        """
        output_sampling = output_sampling or self._recorded is not None
        padding_mask = padding_mask_from_pixel_mask(pixel_values, pixel_mask)
        levels = self.levels(self.backbone(pixel_values, padding_mask), padding_mask)
        memory = self.encoder(levels)
        queries = self.queries(memory, levels, self.heads)
        dec = self.decoder(
            queries.tgt,
            queries.query_pos,
            queries.reference_points,
            memory,
            levels,
            refine_heads=self.heads.refine_heads(),
            output_sampling=output_sampling,
        )
        logits, boxes = [], []
        for i, (state, reference) in enumerate(zip(dec.states, dec.references, strict=True)):
            class_head, box_head = self.heads.for_layer(i)
            logits.append(class_head(state))
            boxes.append(refine_boxes(box_head(state), reference))
        out = self.layer_outputs(logits, boxes)
        if queries.enc_outputs is not None:
            out["enc_outputs"] = queries.enc_outputs
        if output_sampling:
            out["sampling_locations"] = torch.stack(dec.sampling_locations)
            out["attention_weights"] = torch.stack(dec.attention_weights)
            out["reference_points"] = dec.references[-1]
            out["valid_ratios"] = levels.valid_ratios
        if self._recorded is not None:
            self._recorded.append(out)
        return out

    def postprocess(self, outputs: dict, sizes: Tensor, threshold: float) -> list[Predictions]:
        """The official top-100 over all (query, class) sigmoid scores."""
        return postprocess_topk(outputs, sizes, threshold)


def build_deformable_detr(config: DeformableDetrConfig) -> DeformableDETR:
    """Pick the parts for ``config``: one level is C5 alone; more start at C3 (or C4)."""
    c = config.hidden_dim
    stages = (4,) if config.num_levels == 1 else tuple(range(5 - min(config.num_levels, 3), 5))
    backbone = Backbone(config.backbone, return_stages=stages)
    sizes = (c, config.nheads, config.ffn_dim, config.dropout, config.num_levels)
    encoder = DeformableEncoder(config.enc_layers, *sizes, config.enc_points)
    decoder = DeformableDecoder(config.dec_layers, *sizes, config.dec_points)
    _xavier_init(encoder, decoder)
    heads: DeformableHeads
    queries: QuerySource
    if config.with_box_refine:
        heads = PerLayerHeads(c, config.num_classes, config.dec_layers, config.two_stage)
    else:
        heads = SharedHeads(c, config.num_classes)
    if config.two_stage:
        queries = TwoStageQueries(config.num_queries, c)
        _xavier_init(queries)  # its projections belong to the official transformer
    else:
        queries = LearnedQueries(config.num_queries, c)
    levels = MultiScaleInput(backbone.num_channels, c, config.num_levels)
    return DeformableDETR(config, backbone, levels, encoder, decoder, queries, heads)


def _xavier_init(*modules: nn.Module) -> None:
    """The official transformer init: xavier on matrices, then the deformable layers' own."""
    for module in modules:
        for p in module.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in module.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
