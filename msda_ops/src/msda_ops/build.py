"""Compile the C++/CUDA kernels on first use: cached, and safe when many processes start at once.

Two shared libraries, loaded with ``torch.ops.load_library``:

- ``cpu``: the op schemas (``csrc/*.cpp``) and the CPU kernels (``csrc/cpu/*.cpp``);
- ``cuda``: the CUDA kernels (``csrc/cuda/*.cu``), built only when a CUDA device is used.

Each build lives in ``<cache>/<name>-<key>/`` where the key hashes the torch version, its
CUDA version, the Python version, the compiler flags, the sources and (CUDA) the GPU
architectures compiled for, so editing a source, upgrading torch or moving to another GPU
builds afresh and never loads a stale library ("no kernel image is available"). ``<cache>`` is
``$MSDA_OPS_CACHE_DIR``, else ``$XDG_CACHE_HOME/msda_ops``, else ``~/.cache/msda_ops``.

An exclusive ``flock`` on ``<dir>.lock`` covers build and first load; the ``BUILT`` marker
is written last, so a process either finds a finished library or waits for the builder
(DDP ranks compile once). The OS drops the lock of a killed builder, unlike torch's own
lock-file baton, so a crash never leaves the others waiting forever.

A library compiled at install time (``MSDA_OPS_BUILD_EXT=1``, see ``setup.py``) is used
first when it was built for this torch.

Precompile from the command line (prints where the libraries are)::

    python -m msda_ops.build            # CPU, and CUDA when a device and a toolkit exist
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from msda_ops.cuda_home import find_cuda_home, link_cudart

PACKAGE = Path(__file__).resolve().parent
CSRC = PACKAGE / "csrc"
_OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
# No -std: torch's extension builder picks the standard its own headers need.
CXX_FLAGS = ["-O3", *_OPENMP]
CUDA_FLAGS = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]


class BuildError(RuntimeError):
    """The kernels could not be compiled or loaded; the message says why."""


def sources(kind: str) -> list[Path]:
    """The translation units of library ``kind`` (``"cpu"`` or ``"cuda"``)."""
    if kind == "cpu":
        return sorted(CSRC.glob("*.cpp")) + sorted((CSRC / "cpu").glob("*.cpp"))
    if kind == "cuda":
        return sorted((CSRC / "cuda").glob("*.cu"))
    raise ValueError(f"unknown kernel library {kind!r}; expected 'cpu' or 'cuda'")


def cache_root() -> Path:
    """Where JIT builds are kept (see the module docstring)."""
    if os.environ.get("MSDA_OPS_CACHE_DIR"):
        return Path(os.environ["MSDA_OPS_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "msda_ops"


def cuda_arch_list() -> str:
    """The GPU architectures the CUDA library is compiled for, as ``TORCH_CUDA_ARCH_LIST``.

    ``$TORCH_CUDA_ARCH_LIST`` when set, else the visible devices' compute capabilities (the
    newest also as PTX), which is what torch's builder would pick.

    Raises:
        BuildError: no GPU is visible and the variable is not set.
    """
    chosen = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if chosen:
        return chosen
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    capabilities = sorted({torch.cuda.get_device_capability(i) for i in range(count)})
    if not capabilities:
        raise BuildError(
            "no CUDA device is visible to choose the GPU architectures to compile for; "
            "set TORCH_CUDA_ARCH_LIST to the ones you need, e.g. "
            "TORCH_CUDA_ARCH_LIST='8.0;9.0' for A100 and H100"
        )
    archs = [f"{major}.{minor}" for major, minor in capabilities]
    archs[-1] += "+PTX"
    return ";".join(archs)


def build_directory(kind: str) -> Path:
    """The cache folder of library ``kind`` for this torch, Python, flags and sources.

    Raises:
        BuildError: ``kind="cuda"`` with no architecture to compile for (see cuda_arch_list).
    """
    digest = hashlib.sha256()
    meta = [torch.__version__, str(torch.version.cuda), sys.version, platform.machine(), kind]
    meta += CXX_FLAGS + (CUDA_FLAGS if kind == "cuda" else [])
    if kind == "cuda":
        meta.append(f"arch={cuda_arch_list()}")
    digest.update("\0".join(meta).encode())
    # This library's sources and every header, in a stable order.
    headers = [p for p in CSRC.rglob("*") if p.suffix in (".h", ".cuh")]
    for path in sorted({*sources(kind), *headers}):
        digest.update(str(path.relative_to(CSRC)).encode() + b"\0" + path.read_bytes())
    cuda = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
    tag = f"torch{torch.__version__.split('+')[0]}-{cuda}-py{sys.version_info[0]}{sys.version_info[1]}"
    return cache_root() / f"msda_ops_{kind}-{tag}-{digest.hexdigest()[:16]}"


def _say(text: str, end: str = "\n") -> None:
    """One line on stderr: a first-use build takes a minute and must not look like a hang."""
    sys.stderr.write(text + end)
    sys.stderr.flush()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def _exclusive(lock_path: Path, waiting: str = "") -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (released by the OS if we die).

    ``waiting`` is said on stderr when another process holds the lock.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock; builds are not shared there
        yield
        return
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                _say(waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prebuilt(kind: str) -> Path | None:
    """The library compiled by ``setup.py`` for this torch, if any."""
    info = PACKAGE / "_prebuilt.json"
    if not info.is_file():
        return None
    try:
        built = json.loads(info.read_text())
    except (OSError, ValueError):
        return None
    if built.get("torch") != torch.__version__ or kind not in built.get("libraries", {}):
        return None
    if kind == "cuda":  # compiled for other GPUs: build for these instead
        try:
            if built.get("cuda_arch") != cuda_arch_list():
                return None
        except BuildError:
            return None
    path = PACKAGE / built["libraries"][kind]
    return path if path.is_file() else None


def _cuda_settings() -> None:
    """Point torch's extension builder at a toolkit (PyPI wheels included)."""
    home = find_cuda_home()
    if home is None:
        raise BuildError(
            "no CUDA toolkit (nvcc) found; set CUDA_HOME or install cuda-toolkit[nvcc,cccl]"
        )
    with contextlib.suppress(OSError):  # read-only site-packages: the link may already work
        link_cudart(home)
    from torch.utils import cpp_extension

    # cpp_extension froze CUDA_HOME when it was first imported; the wheel toolkit may be
    # the only one and is not on its search path.
    os.environ["CUDA_HOME"] = str(home)
    cpp_extension.CUDA_HOME = str(home)


def _ninja_on_path() -> None:
    """Make the ``ninja`` of the PyPI package visible when its venv is not activated."""
    if shutil.which("ninja"):
        return
    try:
        import ninja

        folder = Path(ninja.BIN_DIR)
    except (ImportError, AttributeError):
        folder = Path(sys.executable).parent
    if (folder / "ninja").is_file():
        os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


def compile_library(kind: str, verbose: bool = False) -> Path:
    """Compile library ``kind`` into its cache folder (if needed) and return the ``.so`` path.

    Raises:
        BuildError: no sources, no ninja, no toolkit, or a compiler error (log in the folder).
    """
    srcs = sources(kind)
    if not srcs:
        raise BuildError(f"no {kind} sources under {CSRC}")
    directory = build_directory(kind)
    name = directory.name.split("-")[0]
    library = directory / f"{name}.so"
    marker = directory / "BUILT"
    if marker.is_file() and library.is_file():
        return library
    try:
        lock = directory.with_name(directory.name + ".lock")
        waiting = f"msda_ops: waiting for another process to compile the {kind} kernels ({lock})"
        with _exclusive(lock, waiting):
            if marker.is_file() and library.is_file():
                return library  # another process built it while we waited
            _compile(kind, srcs, directory, name, verbose)
            marker.write_text(torch.__version__ + "\n")
    except OSError as exc:  # e.g. a read-only cache folder
        raise BuildError(f"cannot build in {directory}: {exc}") from exc
    return library


def _compile(kind: str, srcs: list[Path], directory: Path, name: str, verbose: bool) -> None:
    """Run torch's JIT builder (ninja) into ``directory``; the caller holds the lock."""
    from torch.utils import cpp_extension

    _ninja_on_path()
    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError as exc:
        raise BuildError("ninja is not installed (pip install ninja)") from exc
    if kind == "cuda":
        _cuda_settings()
    directory.mkdir(parents=True, exist_ok=True)
    # We hold the lock, so a torch baton left here is from a killed build.
    (directory / "lock").unlink(missing_ok=True)
    started = time.monotonic()
    # "done" ends the same line unless the compiler's own output comes in between.
    _say(
        f"msda_ops: compiling the {kind} kernels into {directory} (first use of this version, "
        "one to two minutes) ...",
        end="\n" if verbose else "",
    )
    arch = {"TORCH_CUDA_ARCH_LIST": cuda_arch_list()} if kind == "cuda" else {}
    try:
        with environment(arch):
            cpp_extension.load(
                name=name,
                sources=[str(s) for s in srcs],
                extra_cflags=CXX_FLAGS,
                extra_cuda_cflags=CUDA_FLAGS if kind == "cuda" else None,
                extra_ldflags=list(_OPENMP),
                extra_include_paths=[str(CSRC)],
                build_directory=str(directory),
                is_python_module=False,
                verbose=verbose,
            )
    except Exception as exc:  # compiler errors arrive as RuntimeError/CalledProcessError
        log = directory / "build.log"
        log.write_text(str(exc))
        _say(f" failed (log: {log})")
        raise BuildError(f"compiling the {kind} kernels failed (log: {log})") from exc
    _say(f" done in {time.monotonic() - started:.0f} s")


def load_library(kind: str) -> Path:
    """Make the ops of library ``kind`` available in this process; return the file loaded.

    Raises:
        BuildError: when it can be neither found prebuilt nor compiled.
    """
    library = _prebuilt(kind)
    if library is not None:
        try:
            torch.ops.load_library(str(library))
            return library
        except OSError:
            pass  # built against another torch build: compile instead
    library = compile_library(kind)
    try:
        torch.ops.load_library(str(library))
    except OSError as exc:
        raise BuildError(f"loading {library} failed: {exc}") from exc
    return library


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Precompile the msda_ops kernels.")
    parser.add_argument(
        "--kind",
        choices=["cpu", "cuda"],
        nargs="+",
        default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"],
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    status = 0
    for kind in args.kind:
        try:
            print(f"{kind}: {compile_library(kind, verbose=args.verbose)}")
        except BuildError as exc:
            print(f"{kind}: FAILED: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
