"""Locate a CUDA toolkit (system or PyPI wheels) and compile-check the CUDA sources.

PyPI ships nvcc, the CUDA headers and CCCL as ``cuda-toolkit[nvcc,cccl]``; they land in
``site-packages/nvidia/cu<major>``. This module finds that tree so the kernels can be
built on machines with no system toolkit, and offers a compile-only check used by CI::

    python -m msda_ops.cuda_toolkit --link-cudart
    python -m msda_ops.cuda_toolkit --compile-check --arch 80 90 --out build/cuda-check
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
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


def nvcc_command(home: Path, source: Path, output: Path, archs: list[int]) -> list[str]:
    """The nvcc command line that compiles one ``.cu`` file against torch's headers."""
    from torch.utils import cpp_extension

    # torch's own headers plus the toolkit's; asking cpp_extension for the CUDA paths
    # would consult its CUDA_HOME, frozen at its import time.
    includes = [*cpp_extension.include_paths(device_type="cpu"), str(home / "include"), str(CSRC)]
    includes.append(sysconfig.get_paths()["include"])
    gencode: list[str] = []
    for arch in archs:
        gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    import torch

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        str(home / "bin" / "nvcc"),
        "-c",
        str(source),
        "-o",
        str(output),
        "-std=c++20",
        "-O2",
        "--expt-relaxed-constexpr",
        "-Xcompiler",
        "-fPIC",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        "-DTORCH_EXTENSION_NAME=msda_ops_cuda_check",
        "--threads",
        str(max(1, len(archs))),
        *gencode,
        *[f"-I{p}" for p in includes],
    ]


def compile_check(archs: list[int], out: Path) -> int:
    """Compile every CUDA source for ``archs`` (no GPU needed). Returns an exit code."""
    home = find_cuda_home()
    if home is None:
        print(
            "no nvcc found: install `cuda-toolkit[nvcc,cccl]` at torch's CUDA release",
            file=sys.stderr,
        )
        return 2
    sources = sorted((CSRC / "cuda").glob("*.cu"))
    if not sources:
        print(f"no CUDA sources under {CSRC / 'cuda'}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CUDA_HOME=str(home))

    def run(src: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
        cmd = nvcc_command(home, src, out / (src.stem + ".o"), archs)
        return src, subprocess.run(cmd, env=env, capture_output=True, text=True)

    failed = 0
    # One source at a time: nvcc already uses a thread per architecture.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        for src, proc in pool.map(run, sources):
            status = "ok" if proc.returncode == 0 else "FAILED"
            print(f"nvcc {src.name} sm_{',sm_'.join(map(str, archs))}: {status}")
            if proc.returncode != 0:
                failed += 1
                print(proc.stdout + proc.stderr, file=sys.stderr)
    return 1 if failed else 0


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
