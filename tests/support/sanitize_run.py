"""Forward and backward through every CUDA kernel path, small, for compute-sanitizer.

``make test-gpu`` runs this under ``compute-sanitizer --tool memcheck|synccheck|initcheck
--error-exitcode 1``: every dtype, the vector widths (storage offsets 0/1/2/4), the shuffle and
atomic reductions (D = 8, 6, 512), the deterministic backward, softmax, N = 0, NaN and
out-of-map locations. Compile the kernels before (``python -m msda_ops.build --kind cpu
cuda``) so that nvcc does not run under the sanitizer.

    python tests/support/sanitize_run.py            # on the GPU
    python tests/support/sanitize_run.py --dry-run  # the same calls on the CPU kernel
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
from msda_ops.testing import random_inputs

from msda_ops import ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support.*
from support.msda_kernel_cases import at_offset


def run(device: str) -> int:
    assert ops.kernel_available(device, True)
    calls = 0
    dtypes = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
    # (D, storage offset, softmax, deterministic): shuffle groups (D = 8), atomics (D = 6:
    # G = 3 in float32; D = 512: G = 64 or more), each vector width, both backwards.
    variants = [
        (8, 0, False, False),
        (8, 1, True, True),
        (8, 4, False, True),
        (6, 2, True, False),
        (6, 0, False, True),
        (512, 0, False, False),
        (512, 1, True, True),
    ]
    for dtype, (channels, offset, softmax, deterministic) in itertools.product(dtypes, variants):
        value, shapes, starts, locations, weights = random_inputs(
            2, 5, 2, channels, [(6, 5), (3, 3), (1, 2)], 3, dtype=dtype, device=device,
            seed=channels + offset, spread=0.3,
        )  # fmt: skip
        locations[0, 0, 0, 0, 0, 0] = float("nan")
        locations[0, 1, 0, 1, 0, 1] = float("inf")
        value = at_offset(value, offset)
        grad_output = at_offset(torch.randn(2, 5, 2 * channels, device=device, dtype=dtype), offset)
        torch.use_deterministic_algorithms(deterministic)
        out = torch.ops.msda_ops.ms_deform_attn_forward(
            value, shapes, starts, locations, weights, softmax
        )
        grads = torch.ops.msda_ops.ms_deform_attn_backward(
            grad_output, value, shapes, starts, locations, weights, softmax
        )
        assert out.shape == grad_output.shape and len(grads) == 3
        calls += 2
    torch.use_deterministic_algorithms(False)
    empty = random_inputs(0, 5, 2, 8, [(3, 3)], 2, device=device)
    torch.ops.msda_ops.ms_deform_attn_forward(*empty, False)
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"sanitize_run: {calls + 1} kernel calls on {device} finished")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="run on the CPU kernel instead")
    args = parser.parse_args(argv)
    return run("cpu" if args.dry_run else "cuda")


if __name__ == "__main__":
    sys.exit(main())
