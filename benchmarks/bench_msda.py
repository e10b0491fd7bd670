"""Multi-scale deformable attention: msda_ops kernels against the reference (and anchors).

CPU (default): a small Deformable DETR shape, float32, forward and forward+backward::

    python benchmarks/bench_msda.py                  # -> benchmarks/results/msda_cpu.json
    python benchmarks/bench_msda.py --threads 1      # one core -> msda_cpu_t1.json

GPU: encoder shapes of an 800x1333 image (strides 8-64), N = 1, 2, 4, 8, decoder
Lq = 300 and 900, float32/bfloat16/float16, fwd/bwd/fwd+bwd, peak memory; the original
SenseTime op (``MultiScaleDeformableAttention``) and ``deformops`` join when importable::

    python benchmarks/bench_msda.py --device cuda    # -> benchmarks/results/msda_cuda.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import time_fn, write_results
from msda_ops.testing import random_inputs

from msda_ops import ms_deform_attn

Impl = Callable[..., Tensor]
HEADS, CHANNELS, POINTS = 8, 32, 4
CPU_LEVELS = [(32, 32), (16, 16), (8, 8), (4, 4)]


def gpu_levels(height: int = 800, width: int = 1333) -> list[tuple[int, int]]:
    """Feature maps at strides 8, 16, 32, 64 of a padded image, as a ResNet gives them."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in (8, 16, 32, 64)]


def _original_op() -> Impl | None:
    """The SenseTime extension (PyPI ``ms-deform-attn`` or a local build), if importable."""
    try:
        import MultiScaleDeformableAttention as MSDA  # type: ignore[import-not-found]
    except ImportError:
        return None

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(
            ctx: Any, value: Tensor, shapes: Tensor, starts: Tensor, loc: Tensor, w: Tensor
        ) -> Tensor:  # type: ignore[override]
            ctx.save_for_backward(value, shapes, starts, loc, w)
            return MSDA.ms_deform_attn_forward(value, shapes, starts, loc, w, 64)

        @staticmethod
        def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
            value, shapes, starts, loc, w = ctx.saved_tensors
            gv, gl, gw = MSDA.ms_deform_attn_backward(
                value, shapes, starts, loc, w, grad.contiguous(), 64
            )
            return gv, None, None, gl, gw

    return Function.apply


def _deformops_op() -> Impl | None:
    """deformops' functional multi-scale deformable attention, if importable."""
    try:
        import deformops  # type: ignore[import-not-found]
    except ImportError:
        return None
    for name in ("multi_scale_deformable_attention", "ms_deform_attn", "msda"):
        fn = getattr(deformops, name, None)
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    return None


def implementations(device: str) -> dict[str, Impl]:
    impls: dict[str, Impl] = {
        "msda_ops": lambda *a: ms_deform_attn(*a, backend="kernel"),
        "reference": lambda *a: ms_deform_attn(*a, backend="reference"),
    }
    if device == "cuda":
        for name, factory in (("sensetime", _original_op), ("deformops", _deformops_op)):
            op = factory()
            if op is not None:
                impls[name] = op
            else:
                print(f"anchor {name}: not importable, skipped")
    return impls


def make_call(impl: Impl, args: tuple[Tensor, ...], mode: str) -> Callable[[], None]:
    """One timed call: ``fwd`` (no autograd), ``bwd`` (backward of a kept graph), ``fwd+bwd``."""
    floats = [args[0], args[3], args[4]]
    grad = torch.randn_like(impl(*args))

    def fwd() -> None:
        with torch.no_grad():
            impl(*args)

    def fwd_bwd() -> None:
        torch.autograd.grad(impl(*args), floats, grad)

    if mode == "bwd":
        out = impl(*args)

        def bwd() -> None:
            torch.autograd.grad(out, floats, grad, retain_graph=True)

        return bwd
    return fwd if mode == "fwd" else fwd_bwd


def measure(
    calls: dict[str, Callable[[], None]], repeats: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Median over ``rounds`` interleaved rounds of each call's median of ``repeats``.

    Interleaving gives every implementation the same share of a noisy (shared) machine.
    """
    medians: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            medians[name].append(time_fn(call, repeats=repeats, warmup=1)["median_s"])
    results = {
        name: {"median_s": statistics.median(m), "min_round_s": min(m), "rounds": float(rounds)}
        for name, m in medians.items()
    }
    if torch.cuda.is_available():
        for name, call in calls.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            call()
            torch.cuda.synchronize()
            results[name]["peak_extra_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return results


def run(device: str, repeats: int, rounds: int) -> dict[str, Any]:
    if device == "cpu":
        levels = CPU_LEVELS
        length = sum(h * w for h, w in levels)
        cases = [("encoder", 1, length), ("decoder", 1, 300)]
        dtypes, modes = [torch.float32], ["fwd", "fwd+bwd"]
    else:
        levels = gpu_levels()
        length = sum(h * w for h, w in levels)
        cases = [(f"encoder-n{n}", n, length) for n in (1, 2, 4, 8)]
        cases += [(f"decoder-q{q}-n{n}", n, q) for q in (300, 900) for n in (1, 2, 4, 8)]
        dtypes, modes = [torch.float32, torch.bfloat16, torch.float16], ["fwd", "bwd", "fwd+bwd"]
    impls = implementations(device)
    rows: list[dict[str, Any]] = []
    speedups: list[dict[str, Any]] = []
    for case, batch, queries in cases:
        for dtype in dtypes:
            args = random_inputs(
                batch, queries, HEADS, CHANNELS, levels, POINTS,
                dtype=dtype, device=device, requires_grad=True,
            )  # fmt: skip
            for mode in modes:
                calls = {}
                for name, impl in impls.items():
                    try:
                        calls[name] = make_call(impl, args, mode)
                    except (RuntimeError, TypeError) as exc:  # an anchor without this dtype
                        print(f"{case} {dtype} {mode} {name}: failed ({exc})")
                timings = measure(calls, repeats, rounds)
                key = {"case": case, "dtype": str(dtype).removeprefix("torch."), "mode": mode}
                for name, timing in timings.items():
                    rows.append({**key, "batch": batch, "queries": queries, "impl": name, **timing})
                    print(
                        f"{case:18s} {key['dtype']:8s} {mode:8s} {name:10s} {timing['median_s'] * 1e3:9.3f} ms"
                    )
                ours = timings["msda_ops"]["median_s"]
                for name, timing in timings.items():
                    if name != "msda_ops":
                        speedups.append(
                            {**key, "versus": name, "speedup": timing["median_s"] / ours}
                        )
    return {
        "shapes": {
            "levels": levels,
            "S": length,
            "heads": HEADS,
            "channels": CHANNELS,
            "points": POINTS,
        },
        "threads": torch.get_num_threads(),
        "results": rows,
        "speedups": speedups,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    payload = run(args.device, args.repeats, args.rounds)
    for s in payload["speedups"]:
        print(f"speedup {s['case']} {s['dtype']} {s['mode']} vs {s['versus']}: {s['speedup']:.2f}x")
    suffix = f"_t{args.threads}" if args.threads else ""
    path = write_results(f"msda_{args.device}{suffix}", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
