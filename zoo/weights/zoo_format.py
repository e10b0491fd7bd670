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

from zoo.models.config import BackboneConfig, LossConfig, ModelConfig
from zoo.models.families import build_model, family_named
from zoo.models.registry import variant_of
from zoo.weights.convert import load_weights
from zoo.weights.model_card import model_card

FORMAT = "zoo"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


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
    """The configuration stored by :func:`config_to_dict`, with ``overrides`` applied."""
    if data.get("format") != FORMAT:
        raise ValueError(f"not a zoo config.json (format {data.get('format')!r})")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"config.json has format version {data['format_version']}; this zoo reads up to "
            f"{FORMAT_VERSION}: upgrade the package"
        )
    fields = dict(data["config"])
    fields["backbone"] = BackboneConfig(**fields["backbone"])
    fields["loss"] = LossConfig(**fields["loss"])
    if overrides.get("num_classes", fields["num_classes"]) != fields["num_classes"]:
        # A new class count (fine-tuning) makes the stored names meaningless.
        fields["class_names"] = ()
    # Configs saved before the input statistics were recorded get the dataclass defaults
    # (ImageNet's), which every model of that time was trained with.
    return family_named(data["family"]).config_type(**{**fields, **overrides})


def is_zoo_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a model saved by :func:`save_pretrained`."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return False
    return json.loads(path.read_text()).get("format") == FORMAT


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
    """
    folder = Path(folder)
    data = json.loads((folder / CONFIG_FILE).read_text())
    config = config_from_dict(data, **overrides)
    stored = config_from_dict(data).num_classes
    model = build_model(config)
    path = str(folder / WEIGHTS_FILE)
    state = load_file(path)
    with safe_open(path, framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    for alias, kept in aliases.items():
        state[alias] = state[kept]
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
