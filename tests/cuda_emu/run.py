"""Build and run the CPU emulation of the CUDA kernels (``make test-cuda-emu``).

The harness (``main.cpp``, ``emulator.cpp``) includes ``csrc/cuda/kernels.cuh`` unmodified and
is compiled with sanitizers; the binary is rebuilt only when a source or a flag changes::

    python tests/cuda_emu/run.py                      # ASan + UBSan, the full grid
    python tests/cuda_emu/run.py --sanitizer thread   # TSan, the quick grid
    python tests/cuda_emu/run.py --csrc DIR --out DIR # another copy of csrc (mutants)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CSRC = ROOT / "msda_ops" / "src" / "msda_ops" / "csrc"
SOURCES = [HERE / "main.cpp", HERE / "emulator.cpp"]
SANITIZERS = {
    "address": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    "thread": ["-fsanitize=thread"],
}


def torch_include() -> str:
    """Where torch's headers are (the harness uses c10::Half and c10::BFloat16 only)."""
    from torch.utils import cpp_extension

    return cpp_extension.include_paths()[0]


def build(sanitizer: str, csrc: Path, out: Path, verbose: bool = False) -> Path:
    """Compile the harness against ``csrc``; returns the binary (reused when up to date)."""
    compiler = os.environ.get("CXX", "g++")
    flags = [
        "-std=c++20",
        "-O1",
        "-g",
        "-pthread",
        "-fno-omit-frame-pointer",
        "-Wall",
        "-Wextra",
        "-Wno-unknown-pragmas",  # #pragma unroll is for nvcc
        *SANITIZERS[sanitizer],
        f"-I{HERE}",
        f"-I{csrc}",
        f"-isystem{torch_include()}",
    ]
    digest = hashlib.sha256("\0".join([compiler, *flags]).encode())
    inputs = [
        *SOURCES,
        *sorted(HERE.glob("*.h")),
        *sorted(csrc.rglob("*.h")),
        csrc / "cuda" / "kernels.cuh",
    ]
    for path in inputs:
        digest.update(path.read_bytes())
    out.mkdir(parents=True, exist_ok=True)
    binary = out / f"cuda_emu_{sanitizer}"
    stamp = out / f"cuda_emu_{sanitizer}.key"
    key = digest.hexdigest()
    if binary.is_file() and stamp.is_file() and stamp.read_text() == key:
        return binary
    command = [compiler, *flags, *map(str, SOURCES), "-o", str(binary)]
    if verbose:
        print(" ".join(command), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True)
    print(
        f"cuda-emu: built {binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary} "
        f"({sanitizer}) in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    stamp.write_text(key)
    return binary


def environment(sanitizer: str) -> dict[str, str]:
    env = dict(os.environ)
    if sanitizer == "address":
        env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    else:
        env.setdefault("TSAN_OPTIONS", "halt_on_error=1:second_deadlock_stack=1")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sanitizer", choices=sorted(SANITIZERS), default="address")
    parser.add_argument("--quick", action="store_true", help="the smaller grid (TSan default)")
    parser.add_argument("--warps", type=int, default=2, help="warps emulated at once")
    parser.add_argument("--csrc", type=Path, default=CSRC)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "cuda-emu")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        print("cuda-emu: no C++ compiler (set CXX)", file=sys.stderr)
        return 2
    binary = build(args.sanitizer, args.csrc, args.out, args.verbose)
    command = [str(binary), "--warps", str(args.warps)]
    if args.quick or args.sanitizer == "thread":
        command.append("--quick")
    return subprocess.run(command, env=environment(args.sanitizer)).returncode


if __name__ == "__main__":
    sys.exit(main())
