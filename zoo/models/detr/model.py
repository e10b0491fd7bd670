"""DETR: a ResNet, a transformer encoder-decoder and N learned object queries."""

from __future__ import annotations

from torch import Tensor, nn

from zoo.models.config import DetrConfig
from zoo.models.detr.transformer import DetrTransformer
from zoo.models.parts.backbone import Backbone
from zoo.models.parts.heads import box_head
from zoo.models.parts.position_encoding import SinePositionEncoding
from zoo.models.pipeline.detector import Detector, padding_mask_from_pixel_mask
from zoo.models.pipeline.postprocess import Predictions, postprocess_softmax


class DETR(Detector):
    """DETR for object detection.

    ``pred_logits`` has ``num_classes + 1`` columns; the last is "no object".
    """

    def __init__(self, config: DetrConfig) -> None:
        super().__init__()
        self.config = config
        c = config.hidden_dim
        self.backbone = Backbone(config.backbone, return_stages=(4,))
        self.position_encoding = SinePositionEncoding(c // 2, offset=0.0)
        self.input_proj = nn.Conv2d(self.backbone.num_channels[-1], c, kernel_size=1)
        self.query_embed = nn.Embedding(config.num_queries, c)
        self.transformer = DetrTransformer(
            c, config.nheads, config.enc_layers, config.dec_layers, config.ffn_dim, config.dropout
        )
        self.class_embed = nn.Linear(c, config.num_classes + 1)
        self.bbox_embed = box_head(c)

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor | None = None) -> dict:
        """Detect objects.

        Args:
            pixel_values: (N, 3, H, W) ImageNet-normalised images.
            pixel_mask: (N, H, W), 1/True on real pixels, 0/False on padding; None: no padding.

        Returns:
            ``pred_logits`` (N, Q, num_classes + 1), ``pred_boxes`` (N, Q, 4) normalised
            (cx, cy, w, h) relative to each image's real area, and ``aux_outputs`` (one
            such dict per decoder layer but the last).
        """
        padding_mask = padding_mask_from_pixel_mask(pixel_values, pixel_mask)
        features, mask = self.backbone(pixel_values, padding_mask)[-1]
        pos = self.position_encoding(mask, dtype=pixel_values.dtype)
        src = self.input_proj(features)
        states = self.transformer(
            src.flatten(2).transpose(1, 2),
            pos.flatten(2).transpose(1, 2),
            mask.flatten(1),
            self.query_embed.weight,
        )  # (L_dec, N, Q, C)
        logits = self.class_embed(states)
        boxes = self.bbox_embed(states).sigmoid()
        return self.layer_outputs(list(logits), list(boxes))

    def postprocess(self, outputs: dict, sizes: Tensor, threshold: float) -> list[Predictions]:
        """The official softmax post-processing: best real class per query."""
        return postprocess_softmax(outputs, sizes, threshold)
