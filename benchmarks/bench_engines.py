"""``make demo-engines``: the two engines under the zoo, each against its reference.

1. multi-scale deformable attention: ``msda_ops``' kernel against its pure-PyTorch
   reference, on the 4 levels of a 256x256 image (CPU, float32);
2. Hungarian matching: one ``matcher_rs.linear_sum_assignment_batch`` call against a
   scipy loop, on one DETR training step's cost matrices.

Each prints the agreement (max difference, total costs) and the median times from the
shared harness (:func:`harness.time_fn`). Run: ``python benchmarks/bench_engines.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import time_fn


def _median(fn: Callable[[], Any], repeats: int) -> float:
    # One warm-up call: the first kernel call may compile or load the extension.
    return time_fn(fn, repeats=repeats, warmup=1)["median_s"]


def deformable_attention(repeats: int) -> float:
    """Kernel vs reference, M=8 heads, D=32, P=4, one query per pixel; returns the max
    absolute difference of their outputs."""
    import msda_ops
    from msda_ops import ops

    torch.manual_seed(0)
    shapes = torch.tensor([[32, 32], [16, 16], [8, 8], [4, 4]], dtype=torch.long)
    starts = msda_ops.level_start_index(shapes)
    n, m, d, p = 2, 8, 32, 4
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    lq = s  # encoder self-attention: one query per pixel
    value = torch.randn(n, s, m, d)
    loc = torch.rand(n, lq, m, len(shapes), p, 2) * 1.2 - 0.1  # some points off the map
    attn = torch.rand(n, lq, m, len(shapes), p).softmax(-1)

    backend = "kernel" if ops.kernel_available("cpu", False) else "reference (no kernel built)"
    out = msda_ops.ms_deform_attn(value, shapes, starts, loc, attn)
    ref = msda_ops.ms_deform_attn_reference(value, shapes, starts, loc, attn)
    err = (out - ref).abs().max().item()
    t_kernel = _median(lambda: msda_ops.ms_deform_attn(value, shapes, starts, loc, attn), repeats)
    t_ref = _median(
        lambda: msda_ops.ms_deform_attn_reference(value, shapes, starts, loc, attn), repeats
    )
    print("1) multi-scale deformable attention (CPU, float32)")
    print(f"   value {tuple(value.shape)}, {len(shapes)} levels {shapes.tolist()}, Lq={lq}, P={p}")
    print(f"   backend: {backend}")
    print(f"   max |kernel - reference| = {err:.2e}")
    print(
        f"   forward: kernel {t_kernel * 1e3:.1f} ms, reference {t_ref * 1e3:.1f} ms "
        f"({t_ref / t_kernel:.1f}x)"
    )
    return err


def hungarian_matching(repeats: int) -> tuple[float, float | None]:
    """One DETR training step's matching: B=32 images, 300 queries, 1-39 targets each.

    Returns the total matched cost of matcher_rs and of scipy (None without scipy).
    """
    import matcher_rs

    rng = np.random.default_rng(0)
    costs = [rng.random((300, int(t))) for t in rng.integers(1, 40, size=32)]
    results = matcher_rs.linear_sum_assignment_batch(costs)
    total = float(sum(c[r, k].sum() for c, (r, k) in zip(costs, results, strict=True)))
    t_rs = _median(lambda: matcher_rs.linear_sum_assignment_batch(costs), repeats)
    print("2) Hungarian matching (32 images x 300 queries, 1-39 targets each)")
    print(f"   matcher_rs: total cost {total:.6f}, {t_rs * 1e3:.2f} ms")
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        print("   (scipy not installed: no comparison)")
        return total, None
    ref = [linear_sum_assignment(c) for c in costs]
    ref_total = float(sum(c[r, k].sum() for c, (r, k) in zip(costs, ref, strict=True)))
    t_sp = _median(lambda: [linear_sum_assignment(c) for c in costs], repeats)
    print(f"   scipy loop: total cost {ref_total:.6f}, {t_sp * 1e3:.2f} ms ({t_sp / t_rs:.1f}x)")
    return total, ref_total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    args = parser.parse_args(argv)
    deformable_attention(args.repeats)
    hungarian_matching(args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
