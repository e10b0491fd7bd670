"""What every weights converter shares: reading weight files, key renaming, aliased heads,
loading with a report.

The per-family renaming rules are data of :mod:`zoo.models.registry.families`; the formats are
:mod:`zoo.weights.official_format` and :mod:`zoo.weights.transformers_format`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from zoo.models.config import DeformableDetrConfig, ModelConfig

logger = logging.getLogger(__name__)

# Deformable DETR's heads, at the top level or copied under the decoder.
_HEAD = re.compile(
    r"^(model\.decoder\.|transformer\.decoder\.)?(class_embed|bbox_embed)\.(\d+)\.(.+)$"
)

HeadKey = tuple[str, str, int, str]  # (decoder-copy prefix or "", head name, layer, param)

# Every class head of a zoo model: DETR's, Deformable DETR's shared one, or one per
# decoder layer (plus the two-stage encoder's, the last of ``heads.class_embed``).
CLASS_HEAD = re.compile(r"^(heads\.)?class_embed(\.\d+)?\.(weight|bias)$")


class WeightsError(ValueError):
    """A model file or folder that cannot be loaded: unreadable, corrupt, or holding a
    configuration or weights that do not fit. The message starts with the file."""


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (a ``config.json``).

    Raises:
        WeightsError: unreadable, not JSON, or not an object; the message names the file.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object {{...}}, got a {type(data).__name__}")
    return data


@dataclass
class LoadReport:
    """Keys of the model left unset, checkpoint keys left unused, and shape mismatches.

    ``reinitialized`` lists the class-head keys that were deliberately re-created
    (a new class count) instead of loaded; they do not make the load fail.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [
            f"{name}: {', '.join(keys)}"
            for name, keys in (
                ("missing", self.missing),
                ("unexpected", self.unexpected),
                ("mismatched", self.mismatched),
                ("re-initialised (new class count)", self.reinitialized),
            )
            if keys
        ]
        return "; ".join(parts) or "all keys matched"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The weights of a ``.safetensors`` file or a pickled checkpoint (``.pth``, ``.bin``).

    Pickles load with ``torch.load(weights_only=True)``: tensors and plain containers
    only (plus the ``args`` namespace the official training scripts save); a
    ``{"model": state_dict, ...}`` checkpoint gives its ``model``.

    Raises:
        WeightsError: a file that cannot be read (empty, truncated, text, not a
            checkpoint, objects other than tensors); the message names the file.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # Corrupt files fail in many ways (EOFError, UnpicklingError, SafetensorError,
    # RuntimeError, KeyError...); every one means the same to the user.
    except Exception as e:
        raise WeightsError(f"{path}: not a readable weights file ({type(e).__name__}: {e})") from e
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds no state dict (got {type(checkpoint).__name__})")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"{path}: the state dict holds entries that are no tensors: {bad[:5]}")
    return state


def split_heads(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[HeadKey, Tensor]]:
    """Separate Deformable DETR's class/box head tensors (by layer) from the rest."""
    rest: dict[str, Tensor] = {}
    heads: dict[HeadKey, Tensor] = {}
    for key, value in state.items():
        match = _HEAD.match(key)
        if match is None:
            rest[key] = value
        else:
            prefix, name, layer, param = match.groups()
            heads[(prefix or "", name, int(layer), param)] = value
    return rest, heads


def resolve_heads(
    heads: dict[HeadKey, Tensor],
    config: ModelConfig,
    out: dict[str, Tensor],
) -> list[str]:
    """Place Deformable DETR's class/box heads, which checkpoints store aliased.

    The official code (and transformers) keep copies of the refining box heads (and
    two-stage class heads) under the decoder; without refinement one head is stored
    once per layer; transformers 5.x saves tied heads once (layer 0 standing for all).
    Per layer, we take the top-level key, else the decoder's copy, else layer 0's.
    Duplicates must agree with what was taken, or they are reported unused.
    """
    if not isinstance(config, DeformableDetrConfig):
        raise TypeError(f"only Deformable DETR stores per-layer heads, not {type(config).__name__}")
    per_layer, count = config.with_box_refine, config.head_pairs
    copies = {prefix for prefix, _, _, _ in heads if prefix}
    used: set[HeadKey] = set()
    for name in ("class_embed", "bbox_embed"):
        suffixes = sorted({s for (_, n, _, s) in heads if n == name})
        for i in range(count):
            for suffix in suffixes:
                candidates = [("", name, i, suffix)]
                candidates += [(prefix, name, i, suffix) for prefix in sorted(copies)]
                candidates.append(("", name, 0, suffix))
                for source in candidates:
                    if source in heads:
                        target = (
                            f"heads.{name}.{i}.{suffix}" if per_layer else f"heads.{name}.{suffix}"
                        )
                        out[target] = heads[source]
                        used.add(source)
                        break
    unused = []
    for key, value in heads.items():
        if key in used:
            continue
        prefix, name, i, suffix = key
        taken = out.get(f"heads.{name}.{i}.{suffix}" if per_layer else f"heads.{name}.{suffix}")
        if taken is None or not torch.equal(taken, value):
            unused.append(f"{prefix}{name}.{i}.{suffix}")
    return unused


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    return "float" if dtype.is_floating_point or dtype.is_complex else "integer"


def check_values(own: dict[str, Tensor], state: dict[str, Tensor], source: object) -> None:
    """Refuse weights that would load as meaningless numbers.

    A tensor whose kind (float, integer, bool) differs from the model's would be cast
    silently by ``load_state_dict`` (int32 ``1`` for a weight of ``1.0``, bools as 0/1);
    NaN or infinite values make every output NaN. Both are refused rather than warned
    about: no model works with them, and a warning is easy to miss (or filtered away).
    Float precisions (float16, bfloat16, float64) are fine: they are cast to the model's.

    Raises:
        WeightsError: naming ``source`` (the weights file), the key and what was found.
    """
    for key, value in state.items():
        target = own.get(key)
        if target is None or target.shape != value.shape:
            continue  # reported as unexpected or mismatched
        if _kind(value.dtype) != _kind(target.dtype):
            raise WeightsError(
                f"{source}: {key} holds {value.dtype} values where the model has "
                f"{target.dtype} ({_kind(target.dtype)}); the file does not hold this "
                "model's weights (or was written with the wrong dtype)"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise WeightsError(
                f"{source}: {key} holds {bad} NaN or infinite values of {value.numel()}; "
                "weights of a diverged run or a damaged file cannot be loaded"
            )


def load_converted(
    model: nn.Module, state: dict[str, Tensor], unused: list[str], new_class_heads: bool = False
) -> LoadReport:
    """Copy ``state`` into ``model``; report what did not match instead of raising.

    With ``new_class_heads`` the model's class heads keep their fresh initialisation
    and the checkpoint's are skipped (they are listed as ``reinitialized``).
    """
    own = model.state_dict()
    report = LoadReport(unexpected=sorted(unused))
    if new_class_heads:
        report.reinitialized = sorted(k for k in own if CLASS_HEAD.match(k))
        state = {k: v for k, v in state.items() if not CLASS_HEAD.match(k)}
    loadable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(
                f"{key} (checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)})"
            )
        else:
            loadable[key] = value
    skipped = set(loadable) | set(state) | set(report.reinitialized)
    report.missing = sorted(set(own) - skipped)
    model.load_state_dict(loadable, strict=False)
    return report


def load_weights(
    model: nn.Module,
    state: dict[str, Tensor],
    unused: list[str],
    source: object,
    strict: bool,
    new_class_heads: bool = False,
) -> nn.Module:
    """Load converted weights, raise (``strict``) or warn on any mismatch, return in eval mode.

    ``new_class_heads``: see :func:`load_converted`; the re-initialised keys are
    logged, not treated as a mismatch. The :class:`LoadReport` is kept as
    ``model.load_report``.

    Raises:
        WeightsError: a tensor of the wrong kind or with NaN/inf (:func:`check_values`),
            or any mismatch when ``strict``.
    """
    check_values(model.state_dict(), state, source)
    report = load_converted(model, state, unused, new_class_heads)
    if not report.ok:
        if strict:
            raise WeightsError(f"weights of {source} do not fit {type(model).__name__}: {report}")
        warnings.warn(f"loading {source}: {report}", stacklevel=3)
    if report.reinitialized:
        logger.warning(
            "%s: new class count, class heads re-initialised: %s",
            source,
            ", ".join(report.reinitialized),
        )
    model.load_report = report  # type: ignore[assignment]
    return model.eval()
