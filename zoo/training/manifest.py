"""A checkpoint's manifest: the size and SHA-256 of each of its files, checked on load.

``manifest.json`` is written last into the checkpoint's temporary folder, before the
folder is renamed into place, so every checkpoint folder that carries a name holds one.
A file truncated or altered afterwards (a copy cut short, a full disk, a damaged
medium) no longer matches it, and the checkpoint is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: damaged, missing, or not written."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint where one was named."""


def sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record every file of ``folder`` in ``folder/manifest.json``, then flush the folder
    to disk (so that the rename that publishes it never exposes half-written files)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    entries = {p.name: {"size": p.stat().st_size, "sha256": sha256(p)} for p in files}
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1) + "\n")
    for p in [*files, folder / MANIFEST]:
        fsync_path(p)
    fsync_path(folder)


def fsync_path(path: Path) -> None:
    """Flush a file or folder to disk (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders
    finally:
        os.close(fd)


def check_manifest(folder: Path, hashes: bool = True) -> str | None:
    """What is wrong with the checkpoint ``folder``, or None when it is intact.

    Checks that every file of the manifest exists with its size and (when ``hashes``)
    its SHA-256. A folder without a manifest passes when it holds the files every
    checkpoint has (those written before manifests existed).
    """
    path = folder / MANIFEST
    if not path.is_file():
        needed = ("config.json", "model.safetensors", "state.pt")
        missing = [name for name in needed if not (folder / name).is_file()]
        return f"{folder} has no {MANIFEST} and lacks {', '.join(missing)}" if missing else None
    try:
        files = json.loads(path.read_text())["files"]
        entries = [(str(name), int(e["size"]), str(e["sha256"])) for name, e in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{path} is unreadable ({type(e).__name__}: {e})"
    for name, size, digest in entries:
        file = folder / name
        if not file.is_file():
            return f"{file} is missing"
        actual = file.stat().st_size
        if actual != size:
            return f"{file} is {actual} bytes, {size} when written (truncated or replaced)"
        if hashes and sha256(file) != digest:
            return f"{file} does not match the SHA-256 recorded when it was written"
    return None
