"""A Hugging Face Hub cache on disk, written the way
huggingface_hub writes it, so that ``zoo.load`` runs its real download code offline.

Layout (``huggingface_hub.file_download``): ``models--{org}--{name}/`` holds
``blobs/<etag>`` (the file bytes; the etag is the git blob sha1, or the sha256 for LFS
files such as weights), ``snapshots/<commit>/<file>`` as relative symlinks to the
blobs, and ``refs/<branch>`` holding a commit hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

_LFS_SUFFIXES = (".safetensors", ".bin", ".pth")


def repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def add_snapshot(
    cache: Path, repo_id: str, files: dict[str, bytes], commit: str, branch: str | None = "main"
) -> Path:
    """Store ``files`` as commit ``commit`` of ``repo_id``; point ``branch`` at it."""
    repo = repo_folder(cache, repo_id)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name.endswith(_LFS_SUFFIXES):
            etag = hashlib.sha256(data).hexdigest()
        else:
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs" / etag).write_bytes(data)
        link = snapshot / name
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.join("..", "..", "blobs", etag), link)
    if branch is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / branch).write_text(commit)
    return snapshot


def folder_files(
    folder: Path, names: tuple[str, ...] = ("config.json", "model.safetensors")
) -> dict:
    return {n: (folder / n).read_bytes() for n in names if (folder / n).exists()}


def offline_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache that huggingface_hub uses by default, with HF_HUB_OFFLINE=1.

    huggingface_hub reads its environment at import: patch its constants too.
    """
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache
