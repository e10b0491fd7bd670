"""Training checkpoints: written atomically, loaded without unpickling arbitrary objects.

A checkpoint is a folder ``OUT/checkpoints/step-00001234/`` holding

- the model in the zoo's own format (:func:`zoo.weights.zoo_format.save_pretrained`: ``config.json``,
  ``model.safetensors``, a model card), so ``zoo.load(folder)`` loads it like any model;
- ``state.pt``: optimizer, scheduler, gradient scaler, epoch, step and the RNG states of
  every process (python, numpy, torch, cuda), only tensors and plain containers, so it
  loads with ``torch.load(weights_only=True)``.

The folder is written under a temporary name and renamed, then ``OUT/checkpoints/latest``
(the newest folder's name) is replaced through a temporary file: a process killed at
any moment leaves the previous checkpoint complete and ``latest`` pointing at it.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.weights.hub import load
from zoo.weights.zoo_format import load_pretrained, save_pretrained

STATE = "state.pt"
LATEST = "latest"


def capture_rng() -> dict[str, Any]:
    """This process's python, numpy, torch and cuda RNG states as tensors and plain values."""
    version, mt, gauss = random.getstate()
    # The legacy global generator: the one third-party code (and np.random.* calls) draws on.
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002
    return {
        "python": [version, list(mt), gauss],
        "numpy": [
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Set every RNG to a state returned by :func:`capture_rng`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    legacy = ("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached)
    np.random.set_state(legacy)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: str | Path, step: int, model: nn.Module, state: dict[str, Any], keep: int = 2
) -> Path:
    """Write a checkpoint of ``model`` (a zoo detector) under ``root``.

    ``state`` must hold only tensors and plain containers (optimizer/scheduler state
    dicts, numbers, RNG states). Keeps the newest ``keep`` checkpoints.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_pretrained(model, tmp)
        torch.save(state, tmp / STATE)
        if final.exists():  # the same step saved again (e.g. a rerun): replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_atomic(root / LATEST, name)
    _prune(root, keep)
    return final


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(root: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints and leftovers of killed writes."""
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in done[: max(len(done) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".tmp-step-*"):
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder named by ``path``: itself, or the ``latest`` of a checkpoints
    folder or of a training output folder (``OUT`` or ``OUT/checkpoints``)."""
    path = Path(path)
    for root in (path, path / "checkpoints"):
        if (root / LATEST).is_file():
            return root / (root / LATEST).read_text().strip()
    if (path / STATE).is_file():
        return path
    raise FileNotFoundError(f"no checkpoint at {path}")


def load_state(path: str | Path) -> dict[str, Any]:
    """The training state of the checkpoint at ``path`` (see :func:`resolve_checkpoint`)."""
    return torch.load(resolve_checkpoint(path) / STATE, map_location="cpu", weights_only=True)


def load_model(path: str | Path, **overrides: Any) -> nn.Module:
    """The model of a checkpoint (or a run's output folder), in eval mode.

    ``overrides`` as in :func:`zoo.load`: ``num_classes=K`` re-creates the class heads
    for fine-tuning (listed in ``model.load_report.reinitialized``).
    """
    return load(resolve_checkpoint(path), **overrides)


def load_checkpoint_weights(model: nn.Module, path: str | Path) -> None:
    """Copy a checkpoint's weights into ``model``; raises unless every key and shape match.

    (Converted weights with a report: :func:`zoo.weights.convert.load_weights`.)
    """
    model.load_state_dict(load_pretrained(resolve_checkpoint(path)).state_dict())
