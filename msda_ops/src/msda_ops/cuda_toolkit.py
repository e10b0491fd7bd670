"""Locate a CUDA toolkit (system or PyPI wheels) and compile-check the CUDA sources.

PyPI ships nvcc, the CUDA headers and CCCL as ``cuda-toolkit[nvcc,cccl]``; they land in
``site-packages/nvidia/cu<major>``. This module finds that tree so the kernels can be
built on machines with no system toolkit, and offers the compile check used by CI (the shipped build, for chosen architectures)::

    python -m msda_ops.cuda_toolkit --link-cudart
    python -m msda_ops.cuda_toolkit --compile-check --arch 80 90 --out build/cuda-check
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"


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


def compile_check(archs: list[int], out: Path) -> int:
    """Build the CUDA library exactly as it ships, for ``archs``, into ``out`` (no GPU needed).

    The same code path as the first-use build (:func:`msda_ops.build.compile_library`): the
    same sources, torch's own nvcc flags (``COMMON_NVCC_FLAGS``: ``-D__CUDA_NO_HALF_OPERATORS__``
    ...), ours (``-O3``, ``-lineinfo`` ...) and the link, with ``TORCH_CUDA_ARCH_LIST`` set to
    ``archs`` and the cache folder set to ``out``. Returns an exit code.
    """
    from msda_ops import build  # build imports this module

    if find_cuda_home() is None:
        print(
            "no nvcc found: install `cuda-toolkit[nvcc,cccl]` at torch's CUDA release",
            file=sys.stderr,
        )
        return 2
    if not build.sources("cuda"):
        print(f"no CUDA sources under {CSRC / 'cuda'}", file=sys.stderr)
        return 2
    arch_list = ";".join(f"{arch // 10}.{arch % 10}" for arch in archs)
    names = ", ".join(p.name for p in build.sources("cuda"))
    settings = {"TORCH_CUDA_ARCH_LIST": arch_list, "MSDA_OPS_CACHE_DIR": str(out.resolve())}
    try:
        with build.environment(settings):
            library = build.compile_library("cuda")
    except build.BuildError as exc:
        print(f"nvcc {names} sm_{',sm_'.join(map(str, archs))}: FAILED: {exc}", file=sys.stderr)
        log = Path(str(exc).rsplit("log: ", 1)[-1].rstrip(")"))
        if log.is_file():
            print(log.read_text()[-20000:], file=sys.stderr)
        return 1
    print(f"nvcc {names} sm_{',sm_'.join(map(str, archs))}: ok ({library})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--link-cudart", action="store_true", help="add libcudart.so symlink")
    parser.add_argument("--compile-check", action="store_true", help="nvcc -c every .cu file")
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    parser.add_argument("--out", type=Path, default=Path("build/cuda-check"))
    args = parser.parse_args(argv)
    home = find_cuda_home()
    print(f"CUDA toolkit: {home}")
    if args.link_cudart:
        if home is None:
            print("no CUDA toolkit found", file=sys.stderr)
            return 2
        link_cudart(home)
    if args.compile_check:
        return compile_check(args.arch, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
