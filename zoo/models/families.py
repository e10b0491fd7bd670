"""The model families, DETR and Deformable DETR: the one table of what differs between them.

Each :class:`Family` names its configuration class, its builder, how its weights are
laid out in the official ``.pth`` checkpoints and in transformers folders, and its model
card tags. Everything that depends on the family (building, saving, converting, the
card) reads this table instead of testing the configuration's type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from zoo.models.config import DeformableDetrConfig, DetrConfig, ModelConfig
from zoo.models.deformable_detr import build_deformable_detr
from zoo.models.detr import DETR

# (pattern, replacement) pairs applied in order with re.sub to rename a checkpoint key.
KeyRules = list[tuple[str, str | Callable[[re.Match[str]], str]]]


@dataclass(frozen=True)
class Family:
    """What one model family is made of.

    Attributes:
        config_type: its configuration class (``config_type.family`` is the name written
            to a zoo ``config.json``).
        build: configuration -> model with random weights.
        no_object_class: the class head has one more output, "no object" (DETR).
        per_layer_heads: checkpoints store the class/box heads once per decoder layer,
            often aliased (Deformable DETR); see :func:`zoo.weights.convert.resolve_heads`.
        official_keys: official ``.pth`` key -> zoo key.
        transformers_type: ``model_type`` of its transformers ``config.json``.
        transformers_keys: transformers 4.x key -> zoo key (after the shared rules).
        transformers_fields: zoo configuration field -> transformers ``config.json`` key,
            beyond the fields both families share.
        card_tags: Hub tags of its model card.
    """

    config_type: type[DetrConfig] | type[DeformableDetrConfig]
    build: Callable[[Any], nn.Module]
    no_object_class: bool
    per_layer_heads: bool
    official_keys: KeyRules
    transformers_type: str
    transformers_keys: KeyRules
    transformers_fields: dict[str, str]
    card_tags: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.config_type.family


DETR_FAMILY = Family(
    config_type=DetrConfig,
    build=DETR,
    no_object_class=True,
    per_layer_heads=False,
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
    card_tags=("object-detection", "detr", "zoo"),
)

# Deformable DETR's official decoder numbers its norms in the order the layers were
# written (cross-attention first), ours in the order they run.
DEFORMABLE_FAMILY = Family(
    config_type=DeformableDetrConfig,
    build=build_deformable_detr,
    no_object_class=False,
    per_layer_heads=True,
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
    card_tags=("object-detection", "detr", "zoo", "deformable-detr"),
)

FAMILIES: dict[str, Family] = {f.name: f for f in (DETR_FAMILY, DEFORMABLE_FAMILY)}


def family_named(name: str) -> Family:
    """The family called ``name`` (``"detr"`` or ``"deformable"``)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of(config: ModelConfig) -> Family:
    """The family whose configuration class ``config`` is."""
    family = FAMILIES.get(getattr(type(config), "family", ""))
    if family is None or not isinstance(config, family.config_type):
        raise TypeError(f"no model family for configuration type {type(config).__name__}")
    return family


def build_model(config: ModelConfig) -> nn.Module:
    """A model with random weights for ``config``."""
    return family_of(config).build(config)
