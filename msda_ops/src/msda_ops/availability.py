"""What each backend needs and whether this machine has it: :func:`backends`, ``python -m msda_ops``.

Nothing is compiled here: a kernel counts as available when it is built (in the cache or
prebuilt into the package) or when everything its first-use build needs is present.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import torch

from msda_ops import dispatch, ops
from msda_ops.cuda_home import find_cuda_home


@dataclass(frozen=True)
class BackendStatus:
    """One (device type, backend) pair on this machine.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        backend: ``"kernel"``, ``"triton"`` or ``"reference"``.
        available: whether a call on that device can use it now (a kernel may first compile).
        detail: what it is or why it is missing, and what would provide it.
    """

    device: str
    backend: str
    available: bool
    detail: str


def _compiler() -> str | None:
    cxx = os.environ.get("CXX") or "c++"
    return shutil.which(cxx)


def _ninja() -> str | None:
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja
    except ImportError:
        return None
    return str(getattr(ninja, "BIN_DIR", "the ninja package"))


def _kernel_status(kind: str) -> BackendStatus:
    name = "C++ CPU kernel" if kind == "cpu" else "CUDA kernel"
    state = ops.load_state(kind)
    if state:
        return BackendStatus(kind, "kernel", True, f"{name}, loaded")
    if state is False:
        return BackendStatus(kind, "kernel", False, f"{name}: {dispatch.kernel_failure(kind)}")
    if kind == "cuda" and torch.version.cuda is None:
        return BackendStatus(kind, "kernel", False, f"{name}: this torch is a CPU-only build")
    # Imported here: `import msda_ops` leaves build unimported, so that
    # `python -m msda_ops.build` runs it as a fresh __main__ (no runpy warning).
    from msda_ops import build

    directory = build.build_directory(kind)
    if (directory / "BUILT").is_file():
        return BackendStatus(kind, "kernel", True, f"{name}, built in {directory}")
    missing = []
    if _compiler() is None:
        missing.append("a C++ compiler (set CXX or install g++)")
    if _ninja() is None:
        missing.append("ninja (pip install ninja)")
    if kind == "cuda":
        if find_cuda_home() is None:
            missing.append(f"nvcc ({dispatch.nvcc_hint()})")
    if missing:
        return BackendStatus(kind, "kernel", False, f"{name}: needs " + ", ".join(missing))
    return BackendStatus(kind, "kernel", True, f"{name}, compiles on first use into {directory}")


def _triton_status(device: str) -> BackendStatus:
    reason = dispatch.triton_unavailable_reason()
    if reason is not None:
        return BackendStatus(device, "triton", False, reason)
    import triton

    from msda_ops import triton_ops

    if device == "cuda":
        return BackendStatus(device, "triton", True, f"triton {triton.__version__}")
    if triton_ops.interpreted():
        return BackendStatus(device, "triton", True, "Triton interpreter (TRITON_INTERPRET=1)")
    return BackendStatus(
        device, "triton", False, "CUDA tensors only (CPU tensors under TRITON_INTERPRET=1)"
    )


def backends() -> list[BackendStatus]:
    """The backends of each device type this machine has (CPU, and CUDA when present)."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        rows.append(_kernel_status(device))
        rows.append(_triton_status(device))
        rows.append(BackendStatus(device, "reference", True, "pure PyTorch (grid_sample)"))
    return rows


def auto_choice(rows: list[BackendStatus], device: str) -> str:
    """The backend ``auto`` would run on ``device`` for float32 inputs, from ``rows``."""
    order = ["kernel", "triton", "reference"] if device == "cuda" else ["kernel", "reference"]
    usable = {r.backend for r in rows if r.device == device and r.available}
    return next(b for b in order if b in usable)


def describe(rows: list[BackendStatus]) -> str:
    """A plain-text table of ``rows`` with auto's choice per device."""
    lines = [f"msda_ops backends (torch {torch.__version__})"]
    for device in dict.fromkeys(r.device for r in rows):
        lines.append(f"{device}: auto runs {auto_choice(rows, device)}")
        for r in rows:
            if r.device == device:
                mark = "yes" if r.available else "no "
                lines.append(f"  {r.backend:<10} {mark}  {r.detail}")
    return "\n".join(lines)
