"""Which backend runs a call of :func:`msda_ops.ms_deform_attn`, and the one warning that says why.

``auto`` picks, for the inputs' device:

- CPU: the C++ kernel when it is built or can be built, else the reference (warned once by
  :func:`msda_ops.ops.kernel_available`);
- CUDA: the compiled CUDA kernel when it is built or can be built, else the Triton kernels
  (float32/float16/bfloat16, no compiler needed), else the reference; each fallback is
  warned once, naming the backend that runs, why the faster ones do not, and how to get them;
- other devices: the reference, silently.

The choice is made once per (device type, dtype class) and held constant under
``torch.compile`` (``assume_constant_result``), so a compiled graph holds only the op.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch

from msda_ops import ops

_triton_failure: list[str] = []  # why the Triton backend cannot load, once known
_warned: set[tuple[str, str]] = set()


def triton_unavailable_reason() -> str | None:
    """None when the Triton backend can be imported, else why not (without importing twice)."""
    if _triton_failure:
        return _triton_failure[0]
    if importlib.util.find_spec("triton") is None:
        reason = "triton is not installed (pip install triton; Linux wheels of torch bring it)"
    else:
        try:
            from msda_ops import triton_ops  # noqa: F401  (registers the custom ops)
        except Exception as exc:  # a broken or too old triton must not break the op
            reason = f"importing the triton backend failed: {type(exc).__name__}: {exc}"
        else:
            return None
    _triton_failure.append(reason)
    return reason


def require_triton() -> None:
    """Import the Triton backend (registering its ops) or raise RuntimeError saying why not."""
    reason = triton_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"ms_deform_attn: the triton backend is unavailable: {reason}")


def kernel_failure(device_type: str) -> str:
    """Why the compiled kernel of ``device_type`` did not load (after a failed attempt)."""
    return ops.load_failure(device_type) or "it could not be built"


def _warn_once(device_type: str, message: str) -> None:
    key = (device_type, message)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def nvcc_hint() -> str:
    """How to get nvcc for the compiled CUDA kernel (torch's CUDA release from PyPI)."""
    release = torch.version.cuda or "<torch.version.cuda>"
    return (
        f'pip install "cuda-toolkit[nvcc,cccl]=={release}.*" (the CUDA release of torch) or '
        "set CUDA_HOME to a toolkit"
    )


def _auto_cuda(half_or_float: bool) -> str:
    if ops.load("cuda"):
        return "kernel"
    kernel_reason = kernel_failure("cuda")
    triton_reason = triton_unavailable_reason()
    if triton_reason is None and half_or_float:
        _warn_once(
            "cuda",
            f"msda_ops: running the Triton kernels on cuda: the compiled CUDA kernel is "
            f"unavailable ({kernel_reason}). For the compiled kernel, {nvcc_hint()}; "
            "`python -m msda_ops` lists what is available.",
        )
        return "triton"
    if triton_reason is None:
        triton_reason = "it takes float32, float16 and bfloat16 only (this call is float64)"
    _warn_once(
        "cuda",
        f"msda_ops: running the slow PyTorch reference on cuda: the compiled CUDA kernel is "
        f"unavailable ({kernel_reason}) and so is the triton backend ({triton_reason}). "
        f"For the compiled kernel, {nvcc_hint()}; `python -m msda_ops` lists what is "
        "available.",
    )
    return "reference"


@ops.constant_under_compile
def auto_backend(device_type: str, half_or_float: bool) -> str:
    """The backend ``auto`` runs for ``device_type`` ("kernel", "triton" or "reference").

    ``half_or_float``: all floating inputs are float32/float16/bfloat16 (the Triton dtypes).
    May compile the kernel on first call (once per process and version).
    """
    if device_type == "cpu":
        return "kernel" if ops.kernel_available("cpu") else "reference"
    if device_type == "cuda":
        return _auto_cuda(half_or_float)
    return "reference"
