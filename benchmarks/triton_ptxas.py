"""ptxas registers and spills of the Triton kernels for every launch config, without a GPU.

Triton lowers each kernel to PTX and its bundled ptxas assembles it for sm_80 and sm_90
(tests/support/triton_compile.py), for each candidate of msda_ops.triton_tuning.CONFIGS at
the Deformable DETR encoder shape (Lq = 22223 at 800x1333, L*P = 16, D = 32; the decoder's
Lq = 300 gives the same launch) and a wide odd one (L*P = 40, D = 33), softmax on. Writes benchmarks/results/triton_ptxas.json::

    python benchmarks/triton_ptxas.py
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from msda_ops.triton_tuning import CONFIGS, DEFAULT, launch_shape  # noqa: E402
from support.triton_compile import compile_report  # noqa: E402

SHAPES = {"encoder": (22223, 16, 32), "wide": (900, 40, 33)}
CASES = [("forward", "fp32", 90), ("backward", "fp32", 90), ("backward", "bf16", 90),
         ("backward", "fp16", 80)]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/triton_ptxas.json")
    args = parser.parse_args(argv)
    rows = []
    started = time.monotonic()
    for shape_name, (queries, samples, channels) in SHAPES.items():
        for which, dtype, arch in CASES:
            for config in CONFIGS:
                report = compile_report(
                    which, dtype, True, queries, samples, channels, arch, config
                )
                row = {
                    "shape": shape_name,
                    "kernel": which,
                    "dtype": dtype,
                    "arch": f"sm_{arch}",
                    "config": {"tile": config[0], "per_thread": config[1]},
                    "launch": launch_shape(queries, samples, channels, config),
                    "default": config == DEFAULT,
                    "registers": report.registers,
                    "spill_bytes": report.spill_bytes,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {
        "what": "ptxas -v of the msda_ops Triton kernels per launch config (no GPU: compile only)",
        "command": "python benchmarks/triton_ptxas.py",
        "machine": platform.machine(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "sizes": {k: {"Lq": q, "L*P": s, "D": d} for k, (q, s, d) in SHAPES.items()},
        "seconds": round(time.monotonic() - started, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(".tmp")
    temporary.write_text(json.dumps(result, indent=1) + "\n")
    temporary.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
