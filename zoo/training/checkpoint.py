"""Training checkpoints: written atomically, verified on load, loaded without unpickling.

A checkpoint is a folder ``OUT/checkpoints/step-00001234/`` holding

- the model in the zoo's own format (:func:`zoo.weights.zoo_format.save_pretrained`: ``config.json``,
  ``model.safetensors``, a model card), so ``zoo.load(folder)`` loads it like any model;
- ``state.pt``: optimizer, scheduler, gradient scaler, epoch, step and the RNG states of
  every process (python, numpy, torch, cuda), only tensors and plain containers, so it
  loads with ``torch.load(weights_only=True)``;
- ``manifest.json``: the size and SHA-256 of every other file, written last.

The folder is written under a temporary name, its files flushed to disk, and renamed,
then ``OUT/checkpoints/latest`` (the newest folder's name) is replaced through a
temporary file: a process killed at any moment leaves the previous checkpoint complete
and ``latest`` pointing at it. A checkpoint damaged afterwards (a truncated copy, a
full disk, bit rot) fails its manifest: :func:`resolve_checkpoint` then falls back to
the newest intact one with a warning naming the damaged one, which is never deleted.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.training.manifest import (
    CheckpointError,
    CheckpointNotFoundError,
    check_manifest,
    fsync_path,
    write_manifest,
)
from zoo.weights.hub import load
from zoo.weights.zoo_format import load_pretrained, save_pretrained

STATE = "state.pt"
LATEST = "latest"
_STEP = re.compile(r"step-\d{8,}")


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
    root: str | Path,
    step: int,
    model: nn.Module,
    state: dict[str, Any],
    keep: int = 2,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (a zoo detector) under ``root``.

    ``state`` must hold only tensors and plain containers (optimizer/scheduler state
    dicts, numbers, RNG states). Keeps the newest ``keep`` intact checkpoints. A damaged
    checkpoint of the same step is set aside, said by ``report`` (default: a warning).

    Raises:
        CheckpointError: the write failed (a full disk, say); the previous checkpoint
            and ``latest`` are untouched and the message names them.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (checkpoints to keep), got {keep}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_pretrained(model, tmp)
        torch.save(state, tmp / STATE)
        write_manifest(tmp)
        if final.exists():  # the same step saved again (e.g. a resumed run)
            _set_aside_or_remove(final, report)
        os.replace(tmp, final)
        fsync_path(root)
        _write_atomic(root / LATEST, name)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(_write_failure(root, name, e)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep, final)
    return final


def _set_aside_or_remove(folder: Path, report: Callable[[str], None] | None) -> None:
    """Make room for a new checkpoint of the same step: an intact old one is replaced, a
    damaged one is kept for inspection as ``step-N.damaged`` (which nothing loads)."""
    problem = check_manifest(folder, hashes=False)
    if problem is None:
        shutil.rmtree(folder)
        return
    aside = folder.with_name(f"{folder.name}.damaged")
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(folder, aside)
    message = f"damaged checkpoint moved to {aside} ({problem})"
    if report is not None:
        report(message)
    else:
        warnings.warn(message, stacklevel=3)


def _write_failure(root: Path, name: str, error: OSError) -> str:
    """The message of a failed checkpoint write: what failed, and what is still usable."""
    reason = "the disk is full" if error.errno == errno.ENOSPC else str(error)
    latest = root / LATEST
    previous = latest.read_text().strip() if latest.is_file() else None
    kept = (
        f"the previous checkpoint {root / previous} is intact: free space and resume from it"
        if previous
        else "no earlier checkpoint exists"
    )
    return f"could not write checkpoint {root / name} ({reason}); {kept}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    fsync_path(tmp)
    os.replace(tmp, path)


def _step_folders(root: Path) -> list[Path]:
    """The checkpoint folders of ``root``, oldest first."""
    found = [p for p in root.iterdir() if p.is_dir() and _STEP.fullmatch(p.name)]
    return sorted(found, key=_step_of)


def _step_of(folder: Path) -> int:
    return int(folder.name.removeprefix("step-"))


def _prune(root: Path, keep: int, current: Path) -> None:
    """Remove all but the newest ``keep`` intact checkpoints and leftovers of killed writes.

    A damaged checkpoint is never removed (it is evidence, and it is not counted among
    the ``keep``); neither is ``current``, the one just written. Files are checked by
    size here (hashing every kept checkpoint at every save would cost more than it finds).
    """
    intact = [p for p in _step_folders(root) if check_manifest(p, hashes=False) is None]
    for old in intact[: max(len(intact) - keep, 0)]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".tmp-step-*"):
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """The intact checkpoint folder named by ``path``: itself, or the ``latest`` of a
    checkpoints folder or of a training output folder (``OUT`` or ``OUT/checkpoints``).

    When ``latest`` is damaged (see :mod:`zoo.training.manifest`) or names a missing
    folder, the newest intact older checkpoint is used, with a warning naming the bad
    one (which stays on disk). (:func:`find_checkpoint` returns the reasons instead.)

    Raises:
        CheckpointNotFoundError: ``path`` does not exist or holds no checkpoint.
        CheckpointError: every checkpoint there is damaged (the message says how).
    """
    folder, skipped = find_checkpoint(path)
    if skipped:
        warnings.warn(
            f"using checkpoint {folder}: " + "; ".join(skipped) + " (left in place)", stacklevel=2
        )
    return folder


def find_checkpoint(path: str | Path) -> tuple[Path, list[str]]:
    """:func:`resolve_checkpoint` without warnings: the folder, and why each newer
    checkpoint was skipped (empty when ``latest`` was intact)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"no checkpoint at {path}: no such file or directory")
    if path.is_dir():
        for root in (path, path / "checkpoints"):
            if (root / LATEST).is_file() or (root.is_dir() and _step_folders(root)):
                return _newest_intact(root)
        if (path / STATE).is_file():
            problem = check_manifest(path)
            if problem is not None:
                raise CheckpointError(f"checkpoint {path} is damaged: {problem}")
            return path, []
    raise CheckpointNotFoundError(
        f"no checkpoint at {path}: expected a checkpoint folder (with {STATE}), a "
        f"checkpoints folder or a training output folder (with checkpoints/{LATEST})"
    )


def _newest_intact(root: Path) -> tuple[Path, list[str]]:
    """The folder ``root/latest`` names if intact, else the newest intact one before it,
    and the reasons the newer ones were skipped."""
    steps = _step_folders(root)
    named = (root / LATEST).read_text().strip() if (root / LATEST).is_file() else None
    skipped: list[str] = []
    if named is not None and not (_STEP.fullmatch(named) and (root / named).is_dir()):
        skipped.append(f"{root / LATEST} names {named!r}, which is not a checkpoint folder there")
        named = None
    limit = None if named is None else _step_of(root / named)
    candidates = [p for p in reversed(steps) if limit is None or _step_of(p) <= limit]
    for folder in candidates:
        problem = check_manifest(folder)
        if problem is None:
            return folder, skipped
        skipped.append(f"checkpoint {folder.name} is damaged: {problem}")
    if not skipped:
        raise CheckpointNotFoundError(f"no checkpoint in {root}")
    raise CheckpointError(f"no intact checkpoint in {root}: " + "; ".join(skipped))


def read_state(folder: str | Path) -> dict[str, Any]:
    """The ``state.pt`` of the checkpoint ``folder``, loaded without unpickling objects.

    Raises:
        CheckpointError: one line naming the file, when the safe loader refuses it (it
            holds objects other than tensors and plain containers: not a zoo checkpoint,
            or a tampered one) or cannot read it.
    """
    file = Path(folder) / STATE
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{file} is not a training state the safe loader accepts ({_refusal(str(e))}); "
            "zoo checkpoints hold only tensors and plain containers"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{file} cannot be read ({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} holds a {type(state).__name__}, not a training state")
    return state


def _refusal(message: str) -> str:
    """The reason in torch's weights-only refusal, without its advice to unpickle anyway."""
    found = re.search(
        r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\n\n|$)", message, re.DOTALL
    )
    reason = " ".join(found.group(1).split()) if found else "unsupported content"
    return reason.removesuffix(".")


def load_state(path: str | Path) -> dict[str, Any]:
    """The training state of the checkpoint at ``path`` (see :func:`resolve_checkpoint`)."""
    return read_state(resolve_checkpoint(path))


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
