"""The zoo's own weights format: ``config.json`` + ``model.safetensors`` + a model card.

``config.json`` holds the model's configuration dataclass (with the family, the
registered variant it is, and the format version); ``model.safetensors`` its state
dict under the zoo's own names. safetensors refuses tensors that share storage, so
aliased entries (a head tied to another) are stored once and the aliases are listed
in the file's metadata, to be restored on load. A saved model loads back bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from zoo.models.config import (
    BackboneConfig,
    ConfigError,
    LossConfig,
    ModelConfig,
    check_field_names,
)
from zoo.models.registry.catalog import variant_of
from zoo.models.registry.families import FAMILIES, build_model, family_named
from zoo.weights.convert import WeightsError, load_weights, read_json_object
from zoo.weights.model_card import model_card

FORMAT = "zoo"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Fields every format-1 config.json has held since the first release; the others
# (backbone width and norm, class names, input statistics) came later and default.
_REQUIRED = ("num_classes", "hidden_dim", "nheads", "enc_layers", "dec_layers", "ffn_dim")
_REQUIRED_BY_FAMILY = {"deformable": ("num_levels", "enc_points", "dec_points")}


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` content for ``config``: format, family, variant and fields."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": config.family,
        "variant": variant_of(config),
        "config": dataclasses.asdict(config),
    }


def config_from_dict(data: dict[str, Any], **overrides: Any) -> ModelConfig:
    """The configuration stored by :func:`config_to_dict`, with ``overrides`` applied.

    Raises:
        ConfigError: a missing or unknown field, or a value the field cannot take.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else data
        raise ConfigError(f"not a zoo config.json (format {got!r}, expected {FORMAT!r})")
    version = data.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ConfigError(f"format_version must be an int, got {version!r}")
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"config.json has format version {version}; this zoo reads up to "
            f"{FORMAT_VERSION}: upgrade the package"
        )
    family = data.get("family")
    if not isinstance(family, str) or family not in FAMILIES:
        raise ConfigError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    fields = _object(data.get("config"), "config")
    required = ("backbone", "loss", *_REQUIRED, *_REQUIRED_BY_FAMILY.get(family, ()))
    missing = [name for name in required if name not in fields]
    if missing:
        raise ConfigError(f"config is missing the field(s) {', '.join(missing)}")
    config_type = family_named(family).config_type
    fields["backbone"] = _build(BackboneConfig, _object(fields["backbone"], "config.backbone"))
    fields["loss"] = _build(LossConfig, _object(fields["loss"], "config.loss"))
    stored = _build(config_type, fields, "config.")
    check_field_names(config_type, overrides, "overrides")
    if overrides.get("num_classes", stored.num_classes) != stored.num_classes:
        # A new class count (fine-tuning) makes the stored names meaningless.
        fields["class_names"] = ()
    # Configs saved before the input statistics were recorded get the dataclass defaults
    # (ImageNet's), which every model of that time was trained with.
    return config_type(**{**fields, **overrides})


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object of fields, got {value!r}")
    return dict(value)


def _build(cls: Any, fields: dict[str, Any], prefix: str = "") -> Any:
    """``cls(**fields)``; unknown fields are a :class:`ConfigError` listing the known."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(prefix + u for u in unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return cls(**fields)


def is_zoo_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a model saved by :func:`save_pretrained`."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return False
    return read_json_object(path).get("format") == FORMAT


def save_pretrained(model: nn.Module, folder: str | Path) -> Path:
    """Write ``model`` to ``folder`` (created if needed): config, weights and model card.

    Returns:
        The folder.
    """
    config: ModelConfig = model.config  # type: ignore[assignment]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = config_to_dict(config)
    (folder / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n")
    tensors, aliases = _dedupe(model.state_dict())
    metadata = {"format": FORMAT, "aliases": json.dumps(aliases, sort_keys=True)}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata=metadata)
    (folder / "README.md").write_text(model_card(model, data))
    return folder


def load_pretrained(
    folder: str | Path, *, strict: bool = True, reinit_class_heads: bool = False, **overrides: Any
) -> nn.Module:
    """A model saved by :func:`save_pretrained`, in eval mode.

    ``overrides`` change configuration fields; with ``reinit_class_heads`` a new
    ``num_classes`` re-creates the class heads and loads the rest strictly.

    Raises:
        WeightsError: an unreadable or invalid ``config.json`` or ``model.safetensors``
            (the message names the file, the field and what is allowed), or weights that
            do not fit the configuration.
        ConfigError: ``overrides`` that the configuration cannot take.
    """
    folder = Path(folder)
    config_path = folder / CONFIG_FILE
    data = read_json_object(config_path)
    try:
        stored = config_from_dict(data).num_classes
    except ConfigError as e:
        raise WeightsError(f"{config_path}: {e}") from e
    config = config_from_dict(data, **overrides)
    model = build_model(config)
    path = folder / WEIGHTS_FILE
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
        for alias, kept in aliases.items():
            state[alias] = state[kept]
    # safetensors reports corruption as SafetensorError, a missing file as OSError, bad
    # alias metadata as JSON/Key/Attribute errors: to the user all say "this file".
    except Exception as e:
        raise WeightsError(f"{path}: not a readable weights file ({type(e).__name__}: {e})") from e
    new_heads = reinit_class_heads and config.num_classes != stored
    return load_weights(model, state, [], folder, strict, new_class_heads=new_heads)


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload zoo model",
    create_pr: bool = False,
) -> Any:
    """Publish ``model`` in the zoo format to the Hub repository ``repo_id``.

    The repository is created if needed; the folder written by :func:`save_pretrained`
    is uploaded as one commit. ``token`` follows huggingface_hub (None: the saved
    login or ``HF_TOKEN``).

    Returns:
        huggingface_hub's ``CommitInfo`` (its ``commit_url``, ``oid``...).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
        )


def _dedupe(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Keep one entry per storage; return the kept tensors and ``{alias: kept name}``.

    Entries that merely overlap a storage (a slice of another) are copied instead:
    they are not aliases that loading could restore.
    """
    kept: dict[tuple[Any, ...], str] = {}
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        key = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.dtype,
        )
        if key in kept:
            aliases[name] = kept[key]
            continue
        kept[key] = name
        tensors[name] = tensor
    # Whatever still shares memory (partial overlaps) is written as its own copy.
    seen: set[int] = set()
    for name, tensor in tensors.items():
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen or not tensor.is_contiguous():
            tensors[name] = tensor.clone(memory_format=torch.contiguous_format)
        seen.add(ptr)
    return tensors, aliases
