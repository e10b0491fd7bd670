"""Checkpoints of the original repositories (facebookresearch/detr, fundamentalvision/Deformable-DETR).

Their ``.pth`` files hold ``{"model": state_dict, ...}``; the architecture is not stored,
so the caller names the variant and the class count is read from the class head.
Nothing is unpickled beyond tensors and plain containers (``weights_only=True``; the
``args`` namespace the training script saves is allowed as data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from zoo.models.config import ConfigError, ModelConfig
from zoo.models.registry.catalog import variant_config
from zoo.models.registry.factory import create_model
from zoo.models.registry.families import family_of
from zoo.weights.convert import (
    WeightsError,
    load_weights,
    read_state_dict,
    resolve_heads,
    split_heads,
)
from zoo.weights.key_renaming import LAYOUTS, rename_key


def convert_official_state_dict(
    state: dict[str, Tensor], config: ModelConfig
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an official state dict to the zoo's keys; also returns unused checkpoint keys."""
    family = family_of(config)
    if not family.per_layer_heads:
        return {rename_key(k, LAYOUTS[family.name].official_keys): v for k, v in state.items()}, []
    rest, heads = split_heads(state)
    out = {rename_key(k, LAYOUTS[family.name].official_keys): v for k, v in rest.items()}
    return out, resolve_heads(heads, config, out)


def load_official_checkpoint(
    path: str | Path,
    name: str | None = None,
    *,
    strict: bool = True,
    reinit_class_heads: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Variant ``name`` with the weights of an official checkpoint, in eval mode.

    Without ``name`` the variant and its sizes are read off the checkpoint's tensors
    (see :func:`infer_variant`). ``num_classes`` is taken from the checkpoint unless
    overridden: then, with ``reinit_class_heads``, every class head is re-created and
    the rest loads strictly; without, the heads are reported as mismatched.
    """
    state = {
        k: v for k, v in read_state_dict(path).items() if not k.endswith("num_batches_tracked")
    }
    given = dict(overrides)
    try:
        if name is None:
            name, inferred = infer_variant(state)
            overrides = {**inferred, **overrides}
        config = variant_config(name, **overrides)
        stored = _num_classes(state, config)
        new_heads = reinit_class_heads and overrides.get("num_classes", stored) != stored
        overrides.setdefault("num_classes", stored)
        model = create_model(name, **overrides)
        converted, unused = convert_official_state_dict(state, model.config)  # type: ignore[arg-type]
    except ConfigError as e:
        with_given = f" with the overrides {given}" if given else ""
        raise WeightsError(
            f"{path}: the sizes read off this {name} checkpoint{with_given} make no valid "
            f"configuration: {e}"
        ) from e
    # A state dict of something else lacks the keys and shapes read above.
    except (KeyError, IndexError, ValueError) as e:
        if isinstance(e, WeightsError):
            raise
        detail = f"no tensor {e}" if isinstance(e, KeyError) else str(e)
        raise WeightsError(f"{path}: not a DETR or Deformable DETR checkpoint ({detail})") from e
    return load_weights(model, converted, unused, path, strict, new_class_heads=new_heads)


def infer_variant(state: dict[str, Tensor]) -> tuple[str, dict[str, Any]]:
    """The variant and the sizes an official state dict was trained with.

    Read off the tensors: the family, ResNet depth, feature levels, box refinement,
    two-stage, hidden/FFN sizes and layer counts, and (one-stage) the query count.
    Not recoverable, so left at the variant's defaults unless overridden: the number
    of attention heads (and so deformable points), DC5 dilation, and the two-stage
    proposal count.
    """
    if "transformer.level_embed" in state:
        levels = state["transformer.level_embed"].shape[0]
        if "transformer.enc_output.weight" in state:
            name = "ddetr-two-stage"
        elif "transformer.decoder.bbox_embed.0.layers.0.weight" in state:
            name = "ddetr-refine"
        else:
            name = "ddetr" if levels > 1 else "ddetr-single-scale"
        sizes: dict[str, Any] = {"num_levels": levels}
        hidden = state["transformer.level_embed"].shape[1]
    elif "transformer.encoder.layers.0.linear1.weight" in state or "query_embed.weight" in state:
        hidden = state["query_embed.weight"].shape[1]
        sizes = {}
        name = "detr-r50"
    else:
        raise ValueError("not a DETR or Deformable DETR checkpoint: no transformer weights")
    depth = _depth_of_state_dict(state)
    if name == "detr-r50" and depth == 101:
        name = "detr-r101"
    if "query_embed.weight" in state:
        sizes["num_queries"] = state["query_embed.weight"].shape[0]
    layers = {
        part: len({k.split(".")[3] for k in state if k.startswith(f"transformer.{part}.layers.")})
        for part in ("encoder", "decoder")
    }
    ffn = state.get("transformer.encoder.layers.0.linear1.weight")
    if ffn is None:
        ffn = state["transformer.decoder.layers.0.linear1.weight"]
    sizes.update(
        depth=depth,
        hidden_dim=hidden,
        enc_layers=layers["encoder"],
        dec_layers=layers["decoder"],
        ffn_dim=ffn.shape[0],
    )
    return name, sizes


def _depth_of_state_dict(state: dict[str, Tensor]) -> int:
    """The ResNet depth, from the blocks of layer3 and whether they are bottlenecks."""
    blocks = len({k.split(".")[4] for k in state if k.startswith("backbone.0.body.layer3.")})
    bottleneck = "backbone.0.body.layer1.0.conv3.weight" in state
    depths = {(2, False): 18, (6, False): 34, (6, True): 50, (23, True): 101}
    if (blocks, bottleneck) not in depths:
        raise ValueError(f"unsupported backbone: layer3 has {blocks} blocks")
    return depths[(blocks, bottleneck)]


def _num_classes(state: dict[str, Tensor], config: ModelConfig) -> int:
    for key in ("class_embed.weight", "class_embed.0.weight"):
        if key in state:
            rows = state[key].shape[0]
            # DETR's head has one more row: "no object".
            return rows - int(family_of(config).no_object_class)
    raise ValueError("no class head in the checkpoint")
