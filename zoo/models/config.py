"""Model configurations: every size of DETR and Deformable DETR is a dataclass field.

A configuration describes an architecture completely (it is what a weights folder maps
to); the builders in :mod:`zoo.models.detr.model` and :mod:`zoo.models.deformable.model` read it and pick
the parts. Loss and matcher coefficients live in :class:`LossConfig` so that the
criterion can be built from a model's configuration alone; the input statistics
(``image_mean``, ``image_std``, ``image_size``) travel with the weights, as timm's
pretrained configurations do.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

RESNET_DEPTHS = (18, 34, 50, 101)
BACKBONE_NORMS = ("frozen_bn", "group")
# The statistics every official checkpoint was trained with, and the default of configs
# saved before the statistics were recorded.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConfigError(ValueError):
    """A configuration field with a value it cannot take; the message names the field,
    the value and what is allowed."""


def check_field_names(
    config_type: Any, given: Iterable[str], where: str, also: Iterable[str] = ()
) -> None:
    """Raise :class:`ConfigError` for a name in ``given`` that is no field of the dataclass
    ``config_type`` (nor in ``also``), naming the closest field and listing them all."""
    known = {f.name for f in dataclasses.fields(config_type)} | set(also)
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}: unknown configuration field {key!r}{hint}; "
                f"known fields: {', '.join(sorted(known))}"
            )


def _check(
    name: str, value: Any, kind: str, low: float | None = None, high: float | None = None
) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a ``kind`` ("int", "float", "bool",
    "str") within [``low``, ``high``]."""
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    in_range = ok and kind in ("int", "float")
    if in_range and ((low is not None and value < low) or (high is not None and value > high)):
        ok = False
    if not ok:
        bounds = ""
        if kind in ("int", "float") and (low is not None or high is not None):
            lo = "" if low is None else f">= {low:g}"
            hi = "" if high is None else f"<= {high:g}"
            bounds = " " + " and ".join(b for b in (lo, hi) if b)
        a = "an" if kind == "int" else "a"
        raise ConfigError(f"{name} must be {a} {kind}{bounds}, got {value!r}")


@dataclass(frozen=True)
class LossConfig:
    """Matching costs and loss weights (the official recipes are the two factories below).

    ``focal`` selects Deformable DETR's sigmoid focal classification (``focal_alpha``,
    ``focal_gamma``); otherwise DETR's softmax cross-entropy with the no-object class
    weighted by ``eos_coef``.
    """

    cost_class: float = 1.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_class: float = 1.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    focal: bool = False
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    eos_coef: float = 0.1
    aux_loss: bool = True

    def __post_init__(self) -> None:
        for name in ("cost_class", "cost_bbox", "cost_giou", "loss_class", "loss_bbox"):
            _check(f"loss.{name}", getattr(self, name), "float", 0)
        _check("loss.loss_giou", self.loss_giou, "float", 0)
        _check("loss.focal_gamma", self.focal_gamma, "float", 0)
        _check("loss.focal_alpha", self.focal_alpha, "float", 0, 1)
        _check("loss.eos_coef", self.eos_coef, "float", 0, 1)
        _check("loss.focal", self.focal, "bool")
        _check("loss.aux_loss", self.aux_loss, "bool")

    @classmethod
    def detr(cls) -> LossConfig:
        """DETR: softmax CE with no-object weight 0.1, matcher 1/5/2, loss 1/5/2."""
        return cls()

    @classmethod
    def deformable(cls) -> LossConfig:
        """Deformable DETR: focal loss (0.25, 2), matcher 2/5/2, loss 2/5/2."""
        return cls(cost_class=2.0, loss_class=2.0, focal=True)


@dataclass(frozen=True)
class BackboneConfig:
    """A torchvision ResNet, with frozen batch norm (for pretrained weights) or group norm.

    ``depth`` is 18, 34, 50 or 101. ``dilation`` replaces the stride of the last stage
    by a dilation (DETR-DC5: C5 at stride 16, for every depth; basic-block stages dilate
    as timm's ``output_stride=16``). ``train_backbone=False`` freezes the whole backbone.

    ``norm="frozen_bn"`` (the official models): frozen batch norm, and with
    ``train_backbone`` the stem and the first stage still stay frozen, as in the
    official recipes. ``norm="group"`` is for training from scratch (small models, the
    synthetic shapes data): trainable GroupNorm with 8 groups, the whole trunk trains,
    and each block's last norm starts at zero so every block starts as the identity.
    ``width`` is the first stage's channel count (64 in every torchvision ResNet); a
    smaller width scales all four stages, for basic-block ResNets (depth 18 or 34) only.
    """

    depth: int = 50
    dilation: bool = False
    train_backbone: bool = True
    width: int = 64
    norm: str = "frozen_bn"

    def __post_init__(self) -> None:
        _check("backbone.dilation", self.dilation, "bool")
        _check("backbone.train_backbone", self.train_backbone, "bool")
        _check("backbone.width", self.width, "int", 8)
        _check("backbone.norm", self.norm, "str")
        if self.depth not in RESNET_DEPTHS or isinstance(self.depth, bool):
            raise ConfigError(
                f"backbone.depth (ResNet depth) must be one of {RESNET_DEPTHS}, got {self.depth!r}"
            )
        if self.norm not in BACKBONE_NORMS:
            raise ConfigError(f"backbone norm must be one of {BACKBONE_NORMS}, got {self.norm!r}")
        if self.width % 8 != 0:
            raise ConfigError(f"backbone width must be a positive multiple of 8, got {self.width}")
        if self.width != 64 and self.depth not in (18, 34):
            raise ConfigError(
                f"backbone width {self.width} needs a basic-block ResNet (depth 18 or 34), "
                f"got depth {self.depth}"
            )


@dataclass(frozen=True)
class DetectorConfig:
    """Sizes shared by DETR and Deformable DETR (hidden size, heads, layers, FFN width...).

    ``class_names`` names the ``num_classes`` outputs (empty: COCO's names for a 91-way
    head, ``class k`` otherwise); ``zoo train`` fills it from the dataset's categories.
    ``image_size`` is the shorter image side the model was trained for (800 for the
    official models); ``predict`` resizes to it, the longer side capped at 1333/800 of it.
    ``image_mean`` and ``image_std`` (RGB, for pixels in [0, 1]) normalise its inputs.
    ``family`` names the model family (see :mod:`zoo.models.registry.families`).
    """

    family: ClassVar[str]

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int = 91
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    ffn_dim: int = 2048
    num_queries: int = 100
    dropout: float = 0.1
    loss: LossConfig = field(default_factory=LossConfig.detr)
    class_names: tuple[str, ...] = ()
    image_size: int = 800
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, BackboneConfig):
            raise ConfigError(f"backbone must be a BackboneConfig, got {self.backbone!r}")
        if not isinstance(self.loss, LossConfig):
            raise ConfigError(f"loss must be a LossConfig, got {self.loss!r}")
        for name in ("num_classes", "hidden_dim", "nheads", "dec_layers", "ffn_dim"):
            _check(name, getattr(self, name), "int", 1)
        _check("num_queries", self.num_queries, "int", 1)
        _check("image_size", self.image_size, "int", 1)
        _check("enc_layers", self.enc_layers, "int", 0)
        _check("dropout", self.dropout, "float", 0, 1)
        # JSON gives lists; a frozen (hashable) configuration keeps tuples.
        if isinstance(self.class_names, str) or not isinstance(self.class_names, Sequence):
            raise ConfigError(
                f"class_names must be a list of strings (one per class), got {self.class_names!r}"
            )
        object.__setattr__(self, "class_names", tuple(self.class_names))
        for k, class_name in enumerate(self.class_names):
            _check(f"class_names[{k}]", class_name, "str")
        object.__setattr__(self, "image_mean", _rgb("image_mean", self.image_mean))
        object.__setattr__(self, "image_std", _rgb("image_std", self.image_std))
        if min(self.image_std) <= 0:
            raise ConfigError(f"image_std must be positive, got {self.image_std}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"class_names has {len(self.class_names)} names for num_classes {self.num_classes}"
            )
        if self.hidden_dim % self.nheads != 0:
            raise ConfigError(
                f"hidden_dim {self.hidden_dim} is not divisible by nheads {self.nheads}"
            )


@dataclass(frozen=True)
class DetrConfig(DetectorConfig):
    """DETR (Carion et al., 2020) with the official defaults (DETR-R50)."""

    family: ClassVar[str] = "detr"


@dataclass(frozen=True)
class DeformableDetrConfig(DetectorConfig):
    """Deformable DETR (Zhu et al., 2021) with the official defaults (multi-scale).

    ``num_levels`` feature levels: C5 alone when 1; otherwise the last ``min(L, 3)``
    ResNet stages plus ``L - 3`` stride-2 3x3 convolutions on C5. Encoder and decoder
    may sample a different number of points. ``with_box_refine`` gives every decoder
    layer its own heads and lets it refine the previous layer's boxes; ``two_stage``
    turns the top-scoring encoder proposals into the decoder's queries (it needs box
    refinement, as in the official release).
    """

    family: ClassVar[str] = "deformable"
    ffn_dim: int = 1024
    num_queries: int = 300
    loss: LossConfig = field(default_factory=LossConfig.deformable)
    num_levels: int = 4
    enc_points: int = 4
    dec_points: int = 4
    with_box_refine: bool = False
    two_stage: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_levels", "enc_points", "dec_points"):
            _check(name, getattr(self, name), "int", 1)
        _check("with_box_refine", self.with_box_refine, "bool")
        _check("two_stage", self.two_stage, "bool")
        if self.hidden_dim % 32 != 0:
            # The input projections use GroupNorm(32, hidden_dim).
            raise ConfigError(f"hidden_dim must be a multiple of 32, got {self.hidden_dim}")
        if self.two_stage and not self.with_box_refine:
            raise ConfigError("two_stage needs with_box_refine (as the official release)")

    @property
    def head_pairs(self) -> int:
        """(class, box) head pairs the model holds: with box refinement one per decoder
        layer, plus the encoder's for two-stage; else one pair shared by every layer."""
        return self.dec_layers + int(self.two_stage) if self.with_box_refine else 1


ModelConfig = DetrConfig | DeformableDetrConfig


def _rgb(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    """Three floats (one per RGB channel) from a tuple or a JSON list."""
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != 3:
        raise ConfigError(f"{name} must hold 3 values (R, G, B), got {values!r}")
    for k, v in enumerate(values):
        _check(f"{name}[{k}]", v, "float")
    r, g, b = (float(v) for v in values)
    return (r, g, b)
