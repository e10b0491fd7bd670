"""Multi-scale deformable attention: msda_ops backends against the reference and the anchors.

CPU (default): a small Deformable DETR shape, float32, forward and forward+backward::

    python benchmarks/bench_msda.py                  # -> benchmarks/results/msda_cpu.json
    python benchmarks/bench_msda.py --threads 1      # one core -> msda_cpu_t1.json

GPU: the encoder of an 800x1333 image (levels (100,167), (50,84), (25,42), (13,21), M=8,
D=32, P=4, Lq = S) at N = 1, 2, 8 and the decoder at Lq = 300 and 900; float32/bfloat16/
float16; fwd, bwd, fwd+bwd with peak memory; softmax=False and True; the forward's
achieved bandwidth against the device's peak. Implementations: msda_ops' CUDA kernel and
Triton kernels, the PyTorch reference, and the anchors when importable (the original
SenseTime op ``MultiScaleDeformableAttention``; ``deformops`` with its CUDA and Triton
backends), each skipped with its reason otherwise::

    python benchmarks/bench_msda.py --device cuda    # -> benchmarks/results/msda_cuda.json

Rehearsal on a machine without a GPU (imports, arguments, anchors' availability, and the
tiniest shape through every code path on CPU, Triton in its interpreter)::

    python benchmarks/bench_msda.py --device cuda --dry-run
"""

from __future__ import annotations

import os
import sys

# Triton reads TRITON_INTERPRET when it is first imported (torch imports it): a dry run
# runs the Triton kernels in the interpreter on CPU, so set it before anything else.
if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import device_peak_bandwidth, format_table, results_path, time_fn, write_json
from msda_cells import OURS, check_cells, plot_speedups, record_error, speedups
from msda_ops.testing import random_inputs

from msda_ops import ms_deform_attn

# An implementation: (value, shapes, starts, locations, weights, softmax) -> output.
Impl = Callable[..., Tensor]
HEADS, CHANNELS, POINTS = 8, 32, 4
CPU_LEVELS = [(32, 32), (16, 16), (8, 8), (4, 4)]
MODES = ("fwd", "bwd", "fwd+bwd")


def gpu_levels(height: int = 800, width: int = 1333) -> list[tuple[int, int]]:
    """Feature maps at strides 8, 16, 32, 64 of a padded image, as a ResNet gives them."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in (8, 16, 32, 64)]


def _normalised(weights: Tensor, softmax: bool) -> Tensor:
    """The weights an op without a fused softmax gets: softmax over L*P done outside."""
    return weights.flatten(3).softmax(-1).view_as(weights) if softmax else weights


def _sensetime() -> tuple[Impl | None, str]:
    """The original extension (PyPI ``ms-deform-attn`` or a build of the original repo)."""
    try:
        import MultiScaleDeformableAttention as MSDA  # type: ignore[import-not-found]
    except ImportError as exc:
        return None, f"MultiScaleDeformableAttention not importable ({exc})"

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

    def call(v: Tensor, s: Tensor, st: Tensor, loc: Tensor, w: Tensor, softmax: bool) -> Tensor:
        return Function.apply(v, s, st, loc, _normalised(w, softmax))  # type: ignore[no-any-return]

    return call, ""


def _deformops(which: str) -> tuple[Impl | None, str]:
    """deformops' registry call on one backend (its fused softmax included)."""
    try:
        from deformops.registry import Backend, msda  # type: ignore[import-not-found]
    except ImportError as exc:
        return None, f"deformops not importable ({exc})"
    backend = Backend.CUDA if which == "cuda" else Backend.TRITON

    def call(v: Tensor, s: Tensor, st: Tensor, loc: Tensor, w: Tensor, softmax: bool) -> Tensor:
        return msda(v, s, st, loc, w, softmax=softmax, backend=backend)  # type: ignore[no-any-return]

    return call, ""


def _ours(backend: str) -> Impl:
    def call(v: Tensor, s: Tensor, st: Tensor, loc: Tensor, w: Tensor, softmax: bool) -> Tensor:
        return ms_deform_attn(v, s, st, loc, w, softmax=softmax, backend=backend)  # type: ignore[arg-type]

    return call


def implementations(device: str, dry_run: bool) -> tuple[dict[str, Impl], dict[str, str]]:
    """The implementations to time on ``device``, and the reason each missing one is missing."""
    impls: dict[str, Impl] = {"kernel": _ours("kernel"), "reference": _ours("reference")}
    skipped: dict[str, str] = {}
    if device == "cuda" or dry_run:
        impls["triton"] = _ours("triton")
        anchors = {
            "sensetime": _sensetime,
            "deformops-cuda": lambda: _deformops("cuda"),
            "deformops-triton": lambda: _deformops("triton"),
        }
        for name, factory in anchors.items():
            op, reason = factory()
            if op is None:
                skipped[name] = reason
            elif dry_run:
                skipped[name] = "importable; needs CUDA tensors, not run in a dry run"
            else:
                impls[name] = op
    return impls, skipped


def make_call(impl: Impl, args: tuple[Tensor, ...], mode: str, softmax: bool) -> Callable[[], None]:
    """One timed call: ``fwd`` (no autograd), ``bwd`` (backward of a kept graph), ``fwd+bwd``."""
    floats = [args[0], args[3], args[4]]
    grad = torch.randn_like(impl(*args, softmax))

    def fwd() -> None:
        with torch.no_grad():
            impl(*args, softmax)

    def fwd_bwd() -> None:
        torch.autograd.grad(impl(*args, softmax), floats, grad)

    if mode == "bwd":
        out = impl(*args, softmax)

        def bwd() -> None:
            torch.autograd.grad(out, floats, grad, retain_graph=True)

        return bwd
    return fwd if mode == "fwd" else fwd_bwd


def measure(
    calls: dict[str, Callable[[], None]],
    repeats: int,
    rounds: int,
    budget_s: float,
    device: str = "cpu",
    flush_l2: bool = False,
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Median over ``rounds`` interleaved rounds of each call's median of up to ``repeats``.

    Interleaving gives every implementation the same share of a noisy (shared) machine; a
    slow call gets fewer repeats so that one measurement stays near ``budget_s``. On CUDA each
    call is timed by CUDA events (``median_s``) and by the wall clock (``wall_median_s``).
    Returns the timings and, for each call that raised, its error (that call is dropped).
    """
    per_call: dict[str, int] = {}
    errors: dict[str, str] = {}
    timed = dict(calls)
    for name, call in calls.items():  # warm-up (compiles), and the size of the sample
        try:
            first = time_fn(call, repeats=1, warmup=1, device=device)["median_s"]
        except Exception as exc:  # e.g. an anchor without this dtype
            errors[name] = repr(exc)
            del timed[name]
            continue
        per_call[name] = max(2, min(repeats, int(budget_s / max(first, 1e-6) / rounds)))
    event: dict[str, list[float]] = {name: [] for name in timed}
    wall: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(rounds):
        for name, call in timed.items():
            t = time_fn(call, repeats=per_call[name], warmup=0, device=device, flush_l2=flush_l2)
            event[name].append(t["median_s"])
            wall[name].append(t["wall_median_s"])
    results = {
        name: {
            "median_s": statistics.median(m),
            "min_round_s": min(m),
            "wall_median_s": statistics.median(wall[name]),
            "timer": "cuda-events" if device == "cuda" else "wall",
            "rounds": float(rounds),
        }
        for name, m in event.items()
    }
    if device == "cuda":
        for name, call in timed.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            call()
            torch.cuda.synchronize()
            results[name]["peak_extra_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return results, errors


def forward_bytes(args: tuple[Tensor, ...]) -> int:
    """Bytes a forward must move at least: value, locations, weights once, the output once."""
    value, loc, weights = args[0], args[3], args[4]
    out = value.shape[0] * loc.shape[1] * value.shape[2] * value.shape[3] * value.element_size()
    return sum(t.numel() * t.element_size() for t in (value, loc, weights)) + out


def plan(device: str, dry_run: bool, quick: bool) -> dict[str, Any]:
    """Levels, (case, N, Lq) list, dtypes, modes and softmax settings of the run."""
    if dry_run:
        levels = [(3, 4), (2, 2)]
        return {
            "levels": levels,
            "cases": [("tiny", 1, 5)],
            "dtypes": [torch.float32],
            "modes": list(MODES),
            "softmax": [False, True],
        }
    if device == "cpu":
        length = sum(h * w for h, w in CPU_LEVELS)
        return {
            "levels": CPU_LEVELS,
            "cases": [("encoder", 1, length), ("decoder", 1, 300)],
            "dtypes": [torch.float32],
            "modes": ["fwd", "fwd+bwd"],
            "softmax": [False],
        }
    levels = gpu_levels()
    length = sum(h * w for h, w in levels)
    batches = (2,) if quick else (1, 2, 8)
    cases = [(f"encoder-n{n}", n, length) for n in batches]
    cases += [(f"decoder-q{q}-n{n}", n, q) for q in (300, 900) for n in batches]
    dtypes = [torch.float32, torch.bfloat16, torch.float16]
    return {
        "levels": levels,
        "cases": cases,
        "dtypes": dtypes,
        "modes": list(MODES),
        "softmax": [False, True],
    }


def run(
    device: str,
    args: argparse.Namespace,
    save: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """Check and time every case of the plan; ``save`` receives the payload after each case.

    Saving as it goes keeps what was measured when a time limit (the GPU day's) stops the run.
    ``cells`` holds one entry per (case, dtype, softmax, implementation): "ran" (with its
    error against the float64 reference), "skipped: reason" or "failed: reason"; ``failures``
    lists our backends' failed cells only: an anchor that cannot run never fails the run.
    """
    run_device = "cpu" if args.dry_run else device
    setup = plan(device, args.dry_run, args.quick)
    impls, skipped = implementations(device, args.dry_run)
    if args.impls:
        impls = {k: v for k, v in impls.items() if k in args.impls}
    for name, reason in skipped.items():
        print(f"anchor {name}: skipped ({reason})", flush=True)
    peak = device_peak_bandwidth() if run_device == "cuda" else None
    rows: list[dict[str, Any]] = []
    cells: list[dict[str, Any]] = []
    started = time.perf_counter()

    def payload(complete: bool) -> dict[str, Any]:
        return {
            "complete": complete,
            "shapes": {
                "levels": setup["levels"],
                "heads": HEADS,
                "channels": CHANNELS,
                "points": POINTS,
            },
            "device_peak_gb_per_s": peak / 1e9 if peak else None,
            "threads": torch.get_num_threads(),
            "skipped": skipped,
            "cells": cells,
            "failures": [c for c in cells if c["impl"] in OURS and c["status"] != "ran"],
            "wall_s": time.perf_counter() - started,
            "results": rows,
            "speedups": speedups(rows),
        }

    for case, batch, queries in setup["cases"]:
        for dtype in setup["dtypes"]:
            inputs = random_inputs(batch, queries, HEADS, CHANNELS, setup["levels"], POINTS,
                                   dtype=dtype, device=run_device, requires_grad=True)  # fmt: skip
            for softmax in setup["softmax"]:
                key = {"case": case, "dtype": str(dtype).removeprefix("torch."), "softmax": softmax}
                checked, ran = check_cells(impls, inputs, softmax, key)
                cells.extend(checked)
                cells.extend(
                    {**key, "impl": n, "status": f"skipped: {r}"} for n, r in skipped.items()
                )
                for cell in checked:
                    if cell["status"] != "ran":
                        print(f"{case} {key['dtype']} sm={int(softmax)} {cell['impl']}: "
                              f"{cell['status']}", flush=True)  # fmt: skip
                for mode in setup["modes"]:
                    calls = {}
                    for name in [n for n in impls if n in ran]:
                        try:
                            calls[name] = make_call(impls[name], inputs, mode, softmax)
                        except Exception as exc:  # the check ran it; a mode may still fail
                            record_error(cells, key, name, mode, exc)
                    timings, errors = measure(calls, args.repeats, args.rounds, args.budget,
                                              run_device, args.flush_l2)  # fmt: skip
                    for name, error in errors.items():
                        record_error(cells, key, name, mode, error)
                    for name, timing in timings.items():
                        row = {**key, "mode": mode, "batch": batch, "queries": queries,
                               "impl": name, **timing}  # fmt: skip
                        if mode == "fwd":
                            row["gb_per_s"] = forward_bytes(inputs) / timing["median_s"] / 1e9
                            if peak:
                                row["fraction_of_peak"] = row["gb_per_s"] * 1e9 / peak
                        rows.append(row)
                        extra = f" {row['gb_per_s']:8.1f} GB/s" if peak and mode == "fwd" else ""
                        print(
                            f"{case:18s} {key['dtype']:8s} {mode:8s} sm={int(softmax)} "
                            f"{name:16s} {timing['median_s'] * 1e3:9.3f} ms{extra}",
                            flush=True,
                        )
        if save is not None:
            save(payload(complete=False))
    return payload(complete=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per round (at most)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds one measurement aims at (slow calls get fewer repeats); "
        "default 2 on CPU, 0.25 on CUDA",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--impls", nargs="+", default=None, help="only these implementations")
    parser.add_argument(
        "--quick", action="store_true", help="GPU: N=2 only; writes a scratch file by default"
    )
    parser.add_argument(
        "--output",
        default=None,
        help="a .json path or a name in benchmarks/results/ (default: msda_<device>[_tN]; "
        "--quick: a scratch file)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check imports and arguments; run the tiniest shape on CPU (Triton interpreted); "
        "writes JSON only with --output",
    )
    parser.add_argument(
        "--flush-l2", action="store_true", help="CUDA: flush the L2 cache before each timed call"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device (use --dry-run to rehearse here)", file=sys.stderr)
        return 2
    if args.budget is None:
        args.budget = 0.25 if args.device == "cuda" else 2.0
    if args.dry_run:
        args.repeats, args.rounds = 1, 1
    default = f"msda_{args.device}{f'_t{args.threads}' if args.threads else ''}"
    path = results_path(args.output, default, scratch=args.quick)
    payload = run(args.device, args, None if args.dry_run else lambda p: write_json(path, p))
    print(
        format_table(
            payload["speedups"], ["case", "dtype", "mode", "softmax", "ours", "versus", "speedup"]
        )
    )
    counts: dict[str, int] = {}
    for cell in payload["cells"]:
        verdict = cell["status"].split(":")[0]
        counts[verdict] = counts.get(verdict, 0) + 1
    print("cells: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    if args.dry_run:
        print(f"dry run done in {payload['wall_s']:.1f} s: {len(payload['results'])} timings")
    if not args.dry_run or args.output:
        write_json(path, payload)
        print(f"wrote {path}")
    png = path.with_suffix(".png")
    if not args.dry_run and plot_speedups(payload["speedups"], png):
        print(f"wrote {png}")
    # Anchors that cannot run are skipped cells; only our backends fail the run.
    return 1 if payload["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
