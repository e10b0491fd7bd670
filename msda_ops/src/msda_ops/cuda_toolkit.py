"""Command line for the CUDA toolkit: link ``libcudart.so`` and compile-check the CUDA library.

The toolkit is found by :mod:`msda_ops.cuda_home`; the compile check builds the CUDA
library exactly as it ships (:func:`msda_ops.build.compile_library`) for chosen
architectures, with no GPU (CI)::

    python -m msda_ops.cuda_toolkit --link-cudart
    python -m msda_ops.cuda_toolkit --compile-check --arch 80 90 --out build/cuda-check
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msda_ops import build
from msda_ops.cuda_home import find_cuda_home, link_cudart

__all__ = ["compile_check", "find_cuda_home", "link_cudart", "main"]


def compile_check(archs: list[int], out: Path) -> int:
    """Build the CUDA library exactly as it ships, for ``archs``, into ``out`` (no GPU needed).

    The same code path as the first-use build (:func:`msda_ops.build.compile_library`): the
    same sources, torch's own nvcc flags (``COMMON_NVCC_FLAGS``: ``-D__CUDA_NO_HALF_OPERATORS__``
    ...), ours (``-O3``, ``-lineinfo`` ...) and the link, with ``TORCH_CUDA_ARCH_LIST`` set to
    ``archs`` and the cache folder set to ``out``. Returns an exit code.
    """
    if find_cuda_home() is None:
        print(
            "no nvcc found: install `cuda-toolkit[nvcc,cccl]` at torch's CUDA release",
            file=sys.stderr,
        )
        return 2
    if not build.sources("cuda"):
        print(f"no CUDA sources under {build.CSRC / 'cuda'}", file=sys.stderr)
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
    parser.add_argument(
        "--compile-check", action="store_true", help="build the CUDA library for --arch into --out"
    )
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
