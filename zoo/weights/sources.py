"""What ``zoo.load`` can tell from a source string alone (no torch import: the CLI's
argument checks use it before any model code loads)."""

from __future__ import annotations

# Weight files an official checkpoint path may end with.
OFFICIAL_SUFFIXES = (".pth", ".pt", ".safetensors")
# What only a path can look like (a name or an "org/name" repository id cannot).
PATH_SUFFIXES = (*OFFICIAL_SUFFIXES, ".bin", ".json")


def looks_like_path(source: str) -> bool:
    """Whether ``source`` can only be meant as a path, not a registered name or an
    ``org/name`` Hub id: ``/x``, ``./x``, ``~/x``, ``a/b/c``, ``x.pth``, ``C:\\x``."""
    return (
        source.startswith(("/", ".", "~"))
        or source.endswith(PATH_SUFFIXES)
        or source.count("/") > 1
        or "\\" in source
    )
