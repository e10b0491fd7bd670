"""``zoo.load``: a model from a name, a Hub repository, a local folder or a ``.pth`` file.

Named models resolve to their official checkpoint on the Hugging Face Hub at a pinned
commit. Downloads go through huggingface_hub's own cache (``HF_HOME``,
``HF_HUB_CACHE`` or ``cache_dir``), which also honours ``HF_HUB_OFFLINE``, tokens and
revisions exactly as it does for every Hub user.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.models.registry.catalog import (
    get_bundled,
    get_variant,
    identity,
    list_variants,
    unknown_name_message,
)
from zoo.weights.official_format import load_official_checkpoint
from zoo.weights.sources import OFFICIAL_SUFFIXES, looks_like_path
from zoo.weights.transformers_format import WEIGHT_FILES, load_transformers_folder
from zoo.weights.zoo_format import is_zoo_folder, load_pretrained

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class WeightsNotFoundError(OSError):
    """The weights are neither in the local Hub cache nor reachable on the Hub."""


def load(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    **overrides: Any,
) -> nn.Module:
    """A detector with pretrained weights, in eval mode.

    Args:
        name_or_path: a registered name (``zoo.list_models()``), a Hub repository id
            (``org/name``, transformers or zoo layout), a local folder (transformers
            or zoo layout) or an official ``.pth`` checkpoint.
        revision: branch, tag or commit on the Hub; default: the name's pinned commit.
        num_classes: a class count different from the checkpoint's re-creates every
            class head (prior-probability bias for focal models) and loads the rest
            strictly; the re-created keys are in ``model.load_report.reinitialized``.
        device, dtype: where and in what precision to put the model.
        cache_dir, local_files_only, token: as in ``huggingface_hub.hf_hub_download``.
        overrides: other configuration fields (sizes an official ``.pth`` does not
            record, such as ``nheads``).

    Raises:
        WeightsError: (a ``ValueError``) a local file or folder that cannot be loaded:
            invalid or corrupt ``config.json`` or weights, or weights that do not fit the
            configuration; the message names the file (and the field or tensor).
        ConfigError: (a ``ValueError``) ``overrides`` the configuration cannot take.
        ValueError: unknown name.
        FileNotFoundError: a path (``./x``, ``/x``, ``~/x``, ``a/b/c``, ``x.pth``...) that
            does not exist.
        WeightsNotFoundError: not cached and the Hub cannot be reached (or offline).
    """
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    hub: dict[str, Any] = {
        "cache_dir": cache_dir,
        "local_files_only": local_files_only,
        "token": token,
    }
    source = str(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.exists():
        model = _load_local(path, overrides)
    elif (bundled := get_bundled(source)) is not None:
        if not (bundled.path / "config.json").is_file():
            raise ValueError(
                f"the bundled model {source!r} is missing from this installation "
                f"({bundled.path}); reinstall the package"
            )
        model = _load_local(bundled.path, overrides)
        source = f"{source} (bundled: {bundled.path})"
    elif source in list_variants():
        info = get_variant(source)
        if info.hf_hub_id is None:
            raise ValueError(f"variant {source!r} has no published weights")
        revision = revision or info.hf_revision
        folder = download(info.hf_hub_id, revision, **hub)
        model = _load_local(folder, overrides)
        _check_identity(model, source, info.hf_hub_id)
        source = f"{info.hf_hub_id}@{revision or 'main'}"
    elif looks_like_path(source):
        raise FileNotFoundError(f"{source}: no such file or folder")
    elif _REPO_ID.match(source) and not source.startswith("."):
        model = _load_local(download(source, revision, **hub), overrides)
        source = f"{source}@{revision or 'main'}"
    else:
        raise ValueError(unknown_name_message(source))
    model.source = source  # type: ignore[assignment]
    return model.to(device=device, dtype=dtype)


def download(
    repo_id: str,
    revision: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The snapshot folder holding ``config.json`` and the weights of ``repo_id``.

    Only ``model.safetensors`` is fetched when the repository has it;
    ``pytorch_model.bin`` (read later with ``weights_only=True``) otherwise.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    kwargs: dict[str, Any] = {
        "repo_id": repo_id,
        "revision": revision,
        "cache_dir": cache_dir,
        "local_files_only": local_files_only,
        "token": token,
    }
    try:
        config = Path(hf_hub_download(filename="config.json", **kwargs))
    except LocalEntryNotFoundError as e:
        raise WeightsNotFoundError(
            _offline_message(repo_id, revision, cache_dir, local_files_only)
        ) from e
    offline = False
    for name in WEIGHT_FILES:
        try:
            hf_hub_download(filename=name, **kwargs)
            return config.parent
        except LocalEntryNotFoundError:
            offline = True
        except EntryNotFoundError:
            continue
    if offline:
        raise WeightsNotFoundError(_offline_message(repo_id, revision, cache_dir, local_files_only))
    raise FileNotFoundError(f"{repo_id}@{revision or 'main'} has no {' or '.join(WEIGHT_FILES)}")


def _load_local(path: Path, overrides: dict[str, Any]) -> nn.Module:
    """A zoo folder, a transformers folder or an official checkpoint file."""
    reinit = "num_classes" in overrides
    if path.is_file():
        if path.suffix not in OFFICIAL_SUFFIXES:
            raise ValueError(
                f"{path}: expected an official checkpoint ({', '.join(OFFICIAL_SUFFIXES)}) "
                "or a folder"
            )
        return load_official_checkpoint(path, reinit_class_heads=reinit, **overrides)
    if is_zoo_folder(path):
        return load_pretrained(path, reinit_class_heads=reinit, **overrides)
    if (path / "config.json").is_file():
        return load_transformers_folder(path, reinit_class_heads=reinit, **overrides)
    checkpoints = sorted(path.glob("*.pth"))
    if len(checkpoints) == 1:
        return load_official_checkpoint(checkpoints[0], reinit_class_heads=reinit, **overrides)
    raise ValueError(
        f"{path} is neither a zoo nor a transformers folder (no config.json) and holds "
        f"{len(checkpoints)} .pth files (want exactly one)"
    )


def _check_identity(model: nn.Module, name: str, repo_id: str) -> None:
    expected = identity(get_variant(name).config)
    for field, got in identity(model.config).items():  # type: ignore[arg-type]
        want = expected[field]
        if got != want:
            raise ValueError(
                f"{repo_id} does not hold a {name!r} model: {field} is {got!r}, expected {want!r}"
            )


def _offline_message(
    repo_id: str, revision: str | None, cache_dir: str | Path | None, local_files_only: bool
) -> str:
    from huggingface_hub import constants

    where = cache_dir or constants.HF_HUB_CACHE
    if constants.is_offline_mode():
        mode = "offline mode is on (HF_HUB_OFFLINE=1)"
    elif local_files_only:
        mode = "local_files_only=True"
    else:
        mode = "the Hub could not be reached"
    return (
        f"{repo_id} at revision {revision or 'main'} is not in the Hugging Face cache "
        f"({where}) and {mode}. To work offline: download it once on a machine with "
        f"network (zoo.load(...) or `hf download {repo_id}"
        + (f" --revision {revision}" if revision else "")
        + "`), then point HF_HOME / HF_HUB_CACHE / cache_dir at that cache and set "
        "HF_HUB_OFFLINE=1; or pass a local folder or .pth checkpoint to zoo.load."
    )
