"""Checkpoint key renaming: the official ``.pth`` keys and transformers' keys (4.x and
5.x) to the zoo's, for each model family, as ``(pattern, replacement)`` rules applied in
order with ``re.sub``. Everything a converter knows about another layout's names is here."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# (pattern, replacement) pairs applied in order with re.sub to rename a checkpoint key.
KeyRules = list[tuple[str, str | Callable[[re.Match[str]], str]]]


@dataclass(frozen=True)
class CheckpointLayout:
    """How one family's weights are named outside the zoo.

    Attributes:
        official_keys: official ``.pth`` key -> zoo key.
        transformers_type: ``model_type`` of its transformers ``config.json``.
        transformers_keys: transformers 4.x key -> zoo key (after :data:`TRANSFORMERS_COMMON`).
        transformers_fields: zoo configuration field -> transformers ``config.json`` key,
            beyond the fields both families share.
    """

    official_keys: KeyRules
    transformers_type: str
    transformers_keys: KeyRules
    transformers_fields: dict[str, str]


# transformers 5 renamed some keys; bring them back to the 4.x names first.
TRANSFORMERS_V5_TO_V4: KeyRules = [
    (r"\.o_proj\.", ".out_proj."),
    (r"\.mlp\.fc([12])\.", r".fc\1."),
    (r"^model\.backbone\.model\.", "model.backbone.conv_encoder.model."),
]

# 4.x name -> zoo name, for the parts DETR and Deformable DETR share (then the
# family's own ``transformers_keys``).
TRANSFORMERS_COMMON: KeyRules = [
    (r"^model\.backbone\.conv_encoder\.model\.", "backbone.body."),
    (r"\.self_attn_layer_norm\.", ".norm1."),
    (r"\.encoder_attn_layer_norm\.", ".norm2."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.fc1\.", ".ffn.linear1."),
    (r"\.fc2\.", ".ffn.linear2."),
    (r"\.final_layer_norm\.", ".ffn.norm."),
]


DETR_LAYOUT = CheckpointLayout(
    official_keys=[
        (r"^backbone\.0\.body\.", "backbone.body."),
        (r"^transformer\.(encoder|decoder)\.layers\.", r"transformer.\1."),
        (r"^transformer\.decoder\.norm\.", "transformer.decoder_norm."),
        (r"\.multihead_attn\.", ".cross_attn."),
        (r"^(transformer\.encoder\.\d+)\.norm2\.", r"\1.ffn.norm."),
        (r"^(transformer\.decoder\.\d+)\.norm3\.", r"\1.ffn.norm."),
        (r"\.linear([12])\.", r".ffn.linear\1."),
    ],
    transformers_type="detr",
    transformers_keys=[
        (r"^model\.encoder\.layers\.", "transformer.encoder."),
        (r"^model\.decoder\.layers\.", "transformer.decoder."),
        (r"^model\.decoder\.layernorm\.", "transformer.decoder_norm."),
        (r"^model\.input_projection\.", "input_proj."),
        (r"^model\.query_position_embeddings\.", "query_embed."),
        (r"^class_labels_classifier\.", "class_embed."),
        (r"^bbox_predictor\.", "bbox_embed."),
    ],
    transformers_fields={},
)

# Deformable DETR's official decoder numbers its norms in the order the layers were
# written (cross-attention first), ours in the order they run.
DEFORMABLE_LAYOUT = CheckpointLayout(
    official_keys=[
        (r"^backbone\.0\.body\.", "backbone.body."),
        (r"^input_proj\.", "levels.input_proj."),
        (r"^transformer\.level_embed$", "levels.level_embed"),
        (r"^query_embed\.", "queries.query_embed."),
        (
            r"^transformer\.(reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)\.",
            r"queries.\1.",
        ),
        (r"^transformer\.(encoder|decoder)\.layers\.", r"\1.layers."),
        (r"^(encoder\.layers\.\d+)\.norm2\.", r"\1.ffn.norm."),
        (r"^(decoder\.layers\.\d+)\.norm3\.", r"\1.ffn.norm."),
        (r"^(decoder\.layers\.\d+)\.norm([12])\.", lambda m: f"{m[1]}.norm{3 - int(m[2])}."),
        (r"\.linear([12])\.", r".ffn.linear\1."),
    ],
    transformers_type="deformable_detr",
    transformers_keys=[
        (r"^model\.encoder\.layers\.", "encoder.layers."),
        (r"^model\.decoder\.layers\.", "decoder.layers."),
        (r"^model\.input_proj\.", "levels.input_proj."),
        (r"^model\.level_embed$", "levels.level_embed"),
        (r"^model\.query_position_embeddings\.", "queries.query_embed."),
        (
            r"^model\.(reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)\.",
            r"queries.\1.",
        ),
    ],
    transformers_fields={
        "num_levels": "num_feature_levels",
        "enc_points": "encoder_n_points",
        "dec_points": "decoder_n_points",
        "with_box_refine": "with_box_refine",
        "two_stage": "two_stage",
    },
)

# Family name (``ModelConfig.family``) -> its layout.
LAYOUTS: dict[str, CheckpointLayout] = {"detr": DETR_LAYOUT, "deformable": DEFORMABLE_LAYOUT}


def rename_key(key: str, rules: KeyRules) -> str:
    """Apply every ``(pattern, replacement)`` of ``rules`` to ``key``, in order."""
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key
