"""Roofline of the MSDA op on this CPU: its bound at the encoder shape, beside the kernel's time.

The op's work is counted from its definition (DESIGN.md), per sample (n, q, m, l, p):

- forward: 4 bilinear corners x D channels, one multiply-add each (8*D FLOPs), plus the
  corner weights (about 16 scalar FLOPs: pixel coordinates, fractions, 4 products, x weight);
- backward: per corner and channel a dot product term <grad_out, value> and a value-gradient
  update (16*D FLOPs), plus about 40 scalar FLOPs (corner weights, their derivatives, the
  weight and location gradients).

Bytes are the compulsory traffic: every input read once, every output written once (value
(N, S, M, D), locations, weights, output (N, Lq, M*D); the backward also reads grad_output
and writes the three gradients). The machine is measured in the same run:

- memory bandwidth: a STREAM-like triad ``a = b + s*c`` (``torch.add(..., alpha=s, out=a)``)
  on three float32 arrays far larger than the caches, 3 x size bytes per pass (no write
  allocate counted), and a copy for reference;
- peak FLOP/s: a large float32 matmul (2 n^3 FLOPs) with the same threads: the dense
  vector-FMA peak that MKL/oneDNN reach, an upper bound no gather-based op attains.

bound = max(bytes / bandwidth, FLOPs / peak), with the best machine figures of the run; a
shared machine's load lowers them (the load average is recorded), so ``--machine-from`` also
rates the kernel against the figures of an earlier, quieter run. The speed of this VM drifts
by tens of percent within minutes, and not alike for the matmul and the kernel, so the matmul
is also timed in every round beside the kernel ("paired"): each round rates the kernel
against the peak of the same round, and the median, least and most of those ratios are
recorded too. The kernel is timed through the raw ops
(``torch.ops.msda_ops.ms_deform_attn_{forward,backward}``) and, with the reference
interleaved in the same rounds, through ``ms_deform_attn`` with autograd (forward+backward),
as ``bench_msda.py`` does::

    python benchmarks/roofline_cpu.py --threads 2    # -> results/msda_roofline_cpu.json
    python benchmarks/roofline_cpu.py --machine-from results/msda_roofline_cpu_before.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_msda import CHANNELS, CPU_LEVELS, HEADS, POINTS
from harness import format_table, results_path, write_json
from msda_ops.testing import random_inputs

from msda_ops import ms_deform_attn

MATMUL = "matmul (peak)"  # the matmul timed beside the kernel in every round
PHASES = (("forward", "kernel fwd (op)"), ("backward", "kernel bwd (op)"))  # (phase, call)
FORWARD_SCALAR_FLOPS = 16
BACKWARD_SCALAR_FLOPS = 40


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (platform's answer elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The vector extensions that matter to the kernel, as /proc/cpuinfo lists them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16")
                return [f for f in wanted if f in present]
    except OSError:
        pass
    return []


def work(batch: int, queries: int, length: int, levels: int, element: int = 4) -> dict[str, int]:
    """FLOPs and compulsory bytes of one forward and one backward (see the module docstring)."""
    samples = batch * queries * HEADS * levels * POINTS
    value = batch * length * HEADS * CHANNELS * element
    locations, weights = 2 * samples * element, samples * element
    output = batch * queries * HEADS * CHANNELS * element
    return {
        "samples": samples,
        "forward_flops": samples * (8 * CHANNELS + FORWARD_SCALAR_FLOPS),
        "forward_bytes": value + locations + weights + output,
        "backward_flops": samples * (16 * CHANNELS + BACKWARD_SCALAR_FLOPS),
        # reads: grad_output, value, locations, weights; writes: their three gradients.
        "backward_bytes": output + 2 * (value + locations + weights),
    }


def best_median(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls after one warm-up call."""
    return timed(fn, repeats)[0]


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds of ``repeats`` calls after a warm-up.

    On a loaded machine the wall time counts the time other processes hold the cores; the
    CPU time does not (with one thread it is the kernel's own time; with more, OpenMP's
    waiting threads spin and add to it).
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def machine(stream_mib: int, matmul_n: int, repeats: int) -> dict[str, float]:
    """Measured memory bandwidth (triad and copy, bytes/s) and matmul FLOP/s."""
    n = stream_mib * 2**20 // 4
    arrays = [torch.rand(n) for _ in range(3)]
    triad = best_median(lambda: torch.add(arrays[1], arrays[2], alpha=3.0, out=arrays[0]), repeats)
    copy = best_median(lambda: arrays[0].copy_(arrays[1]), repeats)
    arrays.clear()  # free them before the matmul
    mm = best_median(matmul_call(matmul_n), repeats)
    return {
        "stream_array_mib": float(stream_mib),
        "triad_bytes_per_s": 3 * n * 4 / triad,
        "copy_bytes_per_s": 2 * n * 4 / copy,
        "matmul_n": float(matmul_n),
        "matmul_flops_per_s": matmul_flops(matmul_n) / mm,
    }


def matmul_call(n: int) -> Callable[[], None]:
    """One float32 n x n matmul into a preallocated output (the peak's measure)."""
    x, y, out = torch.rand(n, n), torch.rand(n, n), torch.empty(n, n)

    def call() -> None:
        torch.mm(x, y, out=out)

    return call


def matmul_flops(n: int) -> int:
    """FLOPs of one n x n matmul: n^3 multiply-adds."""
    return 2 * n**3


def op_calls(inputs: tuple[Tensor, ...]) -> dict[str, Callable[[], None]]:
    """The timed calls: raw kernel ops, and kernel/reference forward+backward with autograd."""
    value, _, _, loc, weights = inputs
    ops = torch.ops.msda_ops
    plain = [t.detach() for t in inputs]
    grad = torch.randn(value.shape[0], loc.shape[1], HEADS * CHANNELS)
    ms_deform_attn(*inputs, backend="kernel")  # builds and loads the kernel

    def kernel_forward() -> None:
        ops.ms_deform_attn_forward(*plain, False)

    def kernel_backward() -> None:
        ops.ms_deform_attn_backward(grad, *plain, False)

    def fwd_bwd(backend: str) -> Callable[[], None]:
        def call() -> None:
            out = ms_deform_attn(*inputs, backend=backend)  # type: ignore[arg-type]
            torch.autograd.grad(out, [value, loc, weights], grad)

        return call

    return {
        "kernel fwd (op)": kernel_forward,
        "kernel bwd (op)": kernel_backward,
        "kernel fwd+bwd": fwd_bwd("kernel"),
        "reference fwd+bwd": fwd_bwd("reference"),
    }


def interleaved(calls: dict[str, Callable[[], None]], rounds: int, budget_s: float) -> dict:
    """Median over interleaved rounds of each call's median (a noisy, shared machine)."""
    per_call = {}
    for name, call in calls.items():
        first = best_median(call, 1)
        per_call[name] = max(3, int(budget_s / rounds / max(first, 1e-6)))
    medians: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            medians[name].append(timed(call, per_call[name]))
    return {
        name: {
            "median_s": statistics.median(w for w, _ in m),
            "min_round_s": min(w for w, _ in m),
            "cpu_median_s": statistics.median(c for _, c in m),
            "calls": per_call[name],
            "rounds_s": [w for w, _ in m],
        }
        for name, m in medians.items()
    }


def paired(
    kernel_rounds: list[float],
    matmul_rounds: list[float],
    matmul_n: int,
    flops: int,
    nbytes: int,
    bandwidth: float,
) -> dict[str, Any]:
    """The kernel's time against its bound round by round, the peak from the same round's
    matmul (2 n^3 FLOPs in matmul_rounds[i] seconds); the memory side keeps ``bandwidth``."""
    ratios = []
    for kernel_s, matmul_s in zip(kernel_rounds, matmul_rounds, strict=True):
        bound = max(nbytes / bandwidth, flops / (matmul_flops(matmul_n) / matmul_s))
        ratios.append(kernel_s / bound)
    return {
        "x_bound_median": statistics.median(ratios),
        "x_bound_min": min(ratios),
        "x_bound_max": max(ratios),
        "x_bound_rounds": ratios,
    }


def roofline_row(
    phase: str,
    counts: dict[str, int],
    measured_s: float,
    machine_source: str,
    bandwidth: float,
    peak: float,
) -> dict[str, Any]:
    """The bound of one phase on one machine's figures, and the kernel's time against it."""
    flops, nbytes = counts[f"{phase}_flops"], counts[f"{phase}_bytes"]
    memory_s, compute_s = nbytes / bandwidth, flops / peak
    bound = max(memory_s, compute_s)
    return {
        "machine": machine_source,
        "phase": phase,
        "mflop": flops / 1e6,
        "mbytes": nbytes / 1e6,
        "memory_ms": memory_s * 1e3,
        "compute_ms": compute_s * 1e3,
        "bound_ms": bound * 1e3,
        "kernel_ms": measured_s * 1e3,
        "x_bound": measured_s / bound,
        "gflop_per_s": flops / measured_s / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per call kind")
    parser.add_argument("--stream-mib", type=int, default=256, help="triad array size")
    parser.add_argument("--matmul", type=int, default=2048, help="matmul size n")
    parser.add_argument("--output", default=None, help="a .json path or a name in results/")
    parser.add_argument(
        "--machine-from",
        default=None,
        help="a result JSON of this script whose bandwidth and peak also rate the kernel",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    length = sum(h * w for h, w in CPU_LEVELS)
    inputs = random_inputs(
        1, length, HEADS, CHANNELS, CPU_LEVELS, POINTS, dtype=torch.float32, requires_grad=True
    )
    counts = work(1, length, length, len(CPU_LEVELS))
    load_before = os.getloadavg()
    hw = machine(args.stream_mib, args.matmul, repeats=5)
    calls = {**op_calls(inputs), MATMUL: matmul_call(args.matmul)}
    times = interleaved(calls, args.rounds, args.budget)
    hw_after = machine(args.stream_mib, args.matmul, repeats=5)  # the load may change
    bandwidth = max(hw["triad_bytes_per_s"], hw_after["triad_bytes_per_s"])
    peak = max(hw["matmul_flops_per_s"], hw_after["matmul_flops_per_s"])
    machines = {"this run": (bandwidth, peak)}
    if args.machine_from:
        earlier = json.loads(Path(args.machine_from).read_text())
        machines[args.machine_from] = (
            earlier["bandwidth_bytes_per_s"],
            earlier["peak_flops_per_s"],
        )
    rows = [
        roofline_row(phase, counts, times[name][clock], f"{source}, {clock}", bw, flops_per_s)
        for source, (bw, flops_per_s) in machines.items()
        for clock in ("median_s", "cpu_median_s")
        for phase, name in PHASES
    ]
    same_round = {
        phase: paired(
            times[name]["rounds_s"],
            times[MATMUL]["rounds_s"],
            args.matmul,
            counts[f"{phase}_flops"],
            counts[f"{phase}_bytes"],
            bandwidth,
        )
        for phase, name in PHASES
    }
    ratio = times["reference fwd+bwd"]["median_s"] / times["kernel fwd+bwd"]["median_s"]
    cpu_ratio = times["reference fwd+bwd"]["cpu_median_s"] / times["kernel fwd+bwd"]["cpu_median_s"]
    payload = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "threads": torch.get_num_threads(),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "shape": {
            "case": "encoder (bench_msda.py, CPU)",
            "batch": 1,
            "queries": length,
            "levels": CPU_LEVELS,
            "heads": HEADS,
            "channels": CHANNELS,
            "points": POINTS,
            "dtype": "float32",
        },
        "work": counts,
        "machine_before": hw,
        "machine_after": hw_after,
        "bandwidth_bytes_per_s": bandwidth,
        "peak_flops_per_s": peak,
        "peak_source": f"float32 matmul {args.matmul}^3, {args.threads} threads (best of before/after)",
        "timings": times,
        "roofline": rows,
        "roofline_same_round": same_round,
        "fwd_bwd_speedup_vs_reference": ratio,
        "fwd_bwd_cpu_time_ratio_vs_reference": cpu_ratio,
    }
    path = results_path(args.output, "msda_roofline_cpu", scratch=False)
    write_json(path, payload)
    print(
        f"{payload['cpu']}, {args.threads} threads: triad {bandwidth / 1e9:.1f} GB/s, "
        f"matmul {peak / 1e9:.0f} GFLOP/s (load average {load_before[0]:.1f})"
    )
    for name, t in times.items():
        print(
            f"  {name:20s} {t['median_s'] * 1e3:8.3f} ms wall, {t['cpu_median_s'] * 1e3:8.3f} ms "
            f"CPU (medians of {args.rounds} rounds)"
        )
    columns = ["machine", "phase", "mflop", "mbytes", "memory_ms", "compute_ms", "bound_ms"]
    columns += ["kernel_ms"]
    print(format_table(rows, [*columns, "x_bound", "gflop_per_s"]))
    for phase, p in same_round.items():
        print(
            f"{phase}, peak of the same round: {p['x_bound_median']:.2f}x the bound (median of "
            f"{args.rounds} rounds, {p['x_bound_min']:.2f}-{p['x_bound_max']:.2f})"
        )
    print(
        f"fwd+bwd with autograd: kernel {ratio:.1f}x the reference (wall), "
        f"{cpu_ratio:.1f}x (CPU time)"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
