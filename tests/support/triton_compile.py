"""Compile msda_ops' Triton kernels for a GPU architecture on a machine without a GPU.

Triton lowers a kernel to PTX and assembles it with the ``ptxas`` it ships, which needs no
driver. That catches what the interpreter cannot (code that only fails to compile) and,
from ``ptxas -v``, the registers and spills of the launch shapes the backend uses.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import triton
from msda_ops.triton_tuning import DEFAULT, Config, launch_shape
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from msda_ops import triton_kernels

# Strides that are 1 for contiguous inputs: Triton's JIT specialises them to constants.
_UNIT_STRIDES = ("sv_d", "sg_c", "so_c", "sl_c", "ss_c", "st_l", "sw_p")


@dataclass(frozen=True)
class PtxasReport:
    registers: int
    spill_bytes: int


def _signature(kernel: triton.JITFunction, dtype: str, constants: dict) -> dict[str, str]:
    pointers = {"shapes_ptr": "*i64", "starts_ptr": "*i64", "gv_ptr": "*fp32"}
    signature = {}
    for name in kernel.arg_names:
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = pointers.get(name, f"*{dtype}")
        else:  # image strides of big inputs exceed int32
            signature[name] = "i64" if name.endswith("_n") else "i32"
    return signature


def compile_report(
    which: str,
    dtype: str,
    softmax: bool,
    queries: int,
    samples: int,
    channels: int,
    arch: int,
    config: Config = DEFAULT,
) -> PtxasReport:
    """Compile the ``which`` ("forward"/"backward") kernel as launched for these sizes."""
    kernel = getattr(triton_kernels, f"msda_{which}_kernel")
    shape = launch_shape(queries, samples, channels, config)
    warps = shape.pop("num_warps")
    constants = {"SOFTMAX": softmax, **shape}
    constants.update({name: 1 for name in _UNIT_STRIDES if name in kernel.arg_names})
    source = ASTSource(kernel, _signature(kernel, dtype, constants), constants)
    compiled = triton.compile(
        source, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps}
    )
    ptx = compiled.asm["ptx"]
    target = re.search(r"^\.target (\w+)", ptx, re.M)
    assert target is not None
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as handle:
        handle.write(ptx)
        handle.flush()
        proc = subprocess.run(
            [ptxas, f"-arch={target.group(1)}", "-v", handle.name, "-o", os.devnull],
            capture_output=True,
            text=True,
            check=True,
        )
    registers = re.search(r"Used (\d+) registers", proc.stderr)
    spills = re.findall(r"(\d+) bytes spill stores", proc.stderr)
    assert registers is not None, proc.stderr
    return PtxasReport(int(registers.group(1)), sum(int(s) for s in spills))
