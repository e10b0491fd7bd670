"""``make demo``: the project's two engines at work on this machine, offline.

1. Multi-scale deformable attention at a Deformable DETR encoder shape: the compiled
   kernel against the pure-PyTorch reference (same output, how much faster).
2. DETR-style Hungarian matching of a training batch: ``matcher_rs`` solving every image
   in one parallel call, against a per-image ``scipy`` loop when scipy is installed.

Run with ``python -m zoo.demo``. The offline detection demo (a small model trained on
the synthetic shapes data, shipped in the repository, drawing its boxes) replaces this
once that model is trained.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up (first kernel call may compile or load the extension)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def deformable_attention(repeats: int) -> None:
    """Kernel vs reference on the 4 levels of a 256×256 image, M=8 heads, D=32, P=4."""
    import msda_ops

    torch.manual_seed(0)
    shapes = torch.tensor([[32, 32], [16, 16], [8, 8], [4, 4]], dtype=torch.long)
    starts = msda_ops.level_start_index(shapes)
    n, m, d, p = 2, 8, 32, 4
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    lq = s  # encoder self-attention: one query per pixel
    value = torch.randn(n, s, m, d)
    loc = torch.rand(n, lq, m, len(shapes), p, 2) * 1.2 - 0.1  # some points off the map
    attn = torch.rand(n, lq, m, len(shapes), p).softmax(-1)

    from msda_ops import ops

    backend = "kernel" if ops.kernel_available("cpu", False) else "reference (no kernel built)"
    out = msda_ops.ms_deform_attn(value, shapes, starts, loc, attn)
    ref = msda_ops.ms_deform_attn_reference(value, shapes, starts, loc, attn)
    err = (out - ref).abs().max().item()
    t_kernel = _median_time(
        lambda: msda_ops.ms_deform_attn(value, shapes, starts, loc, attn), repeats
    )
    t_ref = _median_time(
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


def hungarian_matching(repeats: int) -> None:
    """One DETR training step's matching: B=32 images, 300 queries, ~20 targets each."""
    import matcher_rs

    rng = np.random.default_rng(0)
    costs = [rng.random((300, int(t))) for t in rng.integers(1, 40, size=32)]
    results = matcher_rs.linear_sum_assignment_batch(costs)
    total = sum(c[r, k].sum() for c, (r, k) in zip(costs, results, strict=True))
    t_rs = _median_time(lambda: matcher_rs.linear_sum_assignment_batch(costs), repeats)
    print("2) Hungarian matching (32 images x 300 queries, 1-39 targets each)")
    print(f"   matcher_rs: total cost {total:.6f}, {t_rs * 1e3:.2f} ms")
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        print("   (scipy not installed: no comparison)")
        return
    ref = [linear_sum_assignment(c) for c in costs]
    ref_total = sum(c[r, k].sum() for c, (r, k) in zip(costs, ref, strict=True))
    t_sp = _median_time(lambda: [linear_sum_assignment(c) for c in costs], repeats)
    print(f"   scipy loop: total cost {ref_total:.6f}, {t_sp * 1e3:.2f} ms ({t_sp / t_rs:.1f}x)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the project's engines at work, offline")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    deformable_attention(args.repeats)
    hungarian_matching(args.repeats)


if __name__ == "__main__":
    main()
