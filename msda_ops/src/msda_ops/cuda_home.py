"""Locate a CUDA toolkit: a system one or PyPI's ``cuda-toolkit[nvcc,cccl]`` wheels.

PyPI ships nvcc, the CUDA headers and CCCL as ``cuda-toolkit[nvcc,cccl]``; they land in
``site-packages/nvidia/cu<major>``. This module finds that tree so the kernels can be built
on machines with no system toolkit. It imports nothing of msda_ops: :mod:`msda_ops.build`
and :mod:`msda_ops.availability` use it, and the command line
(``python -m msda_ops.cuda_toolkit``) sits above them.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path


def _wheel_cuda_homes() -> list[Path]:
    """Candidate ``nvidia/cu*`` folders from PyPI wheels, newest major first."""
    roots = {Path(p) for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])}
    homes: list[Path] = []
    for root in roots:
        nvidia = root / "nvidia"
        if nvidia.is_dir():
            homes.extend(sorted(nvidia.glob("cu[0-9]*"), reverse=True))
    return homes


def find_cuda_home() -> Path | None:
    """Return a CUDA toolkit root that has ``bin/nvcc``, or None.

    Order: ``CUDA_HOME``/``CUDA_PATH``, the PyPI wheels' ``nvidia/cu*`` folder, the
    folder of ``nvcc`` on ``PATH``, ``/usr/local/cuda``.
    """
    candidates: list[Path] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]))
    candidates.extend(_wheel_cuda_homes())
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
    candidates.append(Path("/usr/local/cuda"))
    for home in candidates:
        if (home / "bin" / "nvcc").is_file():
            return home
    return None


def link_cudart(home: Path) -> None:
    """Give the wheel toolkit the unversioned ``libcudart.so`` the linker asks for."""
    libdir = home / "lib"
    target = libdir / "libcudart.so"
    if target.exists():
        return
    versioned = sorted(libdir.glob("libcudart.so.[0-9]*"))
    if not versioned:
        raise FileNotFoundError(f"no libcudart.so.* under {libdir}")
    target.symlink_to(versioned[0].name)
