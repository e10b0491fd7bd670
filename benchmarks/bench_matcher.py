"""Hungarian matching on the CPU: matcher_rs against scipy (per-image loop), lap and laprust.

Three parts, every anchor timed in the same run on the same machine:

1. square matrices (100 ... 4000) of five kinds, float64 and float32, one thread, against
   scipy, lap and laprust, with matcher_rs's AVX scans on and off (``matcher_square.py``);
2. DETR-shaped batches (B images of Q x T_i costs, T_i around T), the scipy loop against
   one ``linear_sum_assignment_batch`` call (all cores, and one thread);
3. the whole matcher step (costs, transfer, solve) for B=4, Q=300, 6 decoder layers and
   COCO-like target counts: ``zoo.loss.matcher.HungarianMatcher`` against the original design
   (one B*Q x sum(T) matrix, ``.cpu()``, scipy per image on the split).

Results: ``benchmarks/results/matcher_cpu.json`` and its plot. Run: ``nice -n 10 python
benchmarks/bench_matcher.py`` (``--quick`` for a smoke run, ``--parts square`` for one part).
lap and laprust are optional (``pip install '.[bench]'``).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

# Python puts this script's folder (benchmarks/) first; matcher_rs and zoo come from the
# installed packages (the repository root must not shadow them: its matcher_rs/ has no
# compiled _core in a non-editable install).
import matcher_square
import numpy as np
import torch
from harness import format_table, results_path, time_fn, write_json
from scipy.optimize import linear_sum_assignment as scipy_lsa
from torchvision.ops import box_convert, generalized_box_iou

import matcher_rs
from zoo.loss.matcher import HungarianMatcher


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


lap = _optional("lap")
laprust = _optional("laprust")


def _target_counts(rng: np.random.Generator, bs: int, t: int) -> list[int]:
    """Per-image target counts around ``t`` (uniform in [t/2, 3t/2], at least 1)."""
    if t <= 1:
        return [t] * bs
    return rng.integers(max(1, t // 2), t + t // 2 + 1, size=bs).tolist()


def _detr_anchors(
    costs: list[np.ndarray], padded: np.ndarray, sizes: list[int]
) -> dict[str, Callable[[], Any]]:
    """Ways to solve one DETR batch, by name (scipy's per-image loop first)."""
    fns: dict[str, Callable[[], Any]] = {
        "scipy_loop": lambda: [scipy_lsa(c) for c in costs],
        "matcher_rs_batch": lambda: matcher_rs.linear_sum_assignment_batch(costs),
        "matcher_rs_batch_1thread": lambda: matcher_rs.linear_sum_assignment_batch(
            costs, n_threads=1
        ),
        "matcher_rs_padded": lambda: matcher_rs.linear_sum_assignment_batch(padded, n_cols=sizes),
        "matcher_rs_loop": lambda: [matcher_rs.linear_sum_assignment(c) for c in costs],
    }
    if lap is not None:
        fns["lap_loop"] = lambda: [lap.lapjv(c, extend_cost=True, return_cost=False) for c in costs]
    if laprust is not None:
        fns["laprust_loop"] = lambda: [
            laprust.lapjv(c, extend_cost=True, return_cost=False) for c in costs
        ]
    return fns


def bench_detr_batches(
    batch_sizes: list[int], queries: list[int], targets: list[int]
) -> list[dict[str, Any]]:
    """B images of (Q, T_i) float32 costs, as DETR's matcher hands them to the solver."""
    rows = []
    rng = np.random.default_rng(1)
    for bs in batch_sizes:
        for q in queries:
            for t in targets:
                sizes = _target_counts(rng, bs, t)
                costs = [rng.random((q, n)).astype(np.float32) for n in sizes]
                padded = np.zeros((bs, q, max(sizes)), dtype=np.float32)
                for b, c in enumerate(costs):
                    padded[b, :, : c.shape[1]] = c
                work = bs * q * t * t
                repeats, min_time = (20, 0.2) if work < 10**7 else (3, 0.0)
                fns = _detr_anchors(costs, padded, sizes)
                entry: dict[str, Any] = {"B": bs, "Q": q, "T": t, "T_i": sizes}
                for name, fn in fns.items():
                    entry[f"{name}_s"] = time_fn(fn, repeats=repeats, min_time=min_time)["median_s"]
                entry["speedup_batch_vs_scipy"] = (
                    entry["scipy_loop_s"] / entry["matcher_rs_batch_s"]
                )
                entry["speedup_1thread_vs_scipy"] = (
                    entry["scipy_loop_s"] / entry["matcher_rs_batch_1thread_s"]
                )
                rows.append(entry)
                print(
                    f"detr B={bs:2d} Q={q:3d} T={t:3d}: scipy {entry['scipy_loop_s'] * 1e3:8.3f} ms, "
                    f"batch {entry['matcher_rs_batch_s'] * 1e3:8.3f} ms "
                    f"(x{entry['speedup_batch_vs_scipy']:.2f}; 1 thread "
                    f"x{entry['speedup_1thread_vs_scipy']:.2f})"
                    + "".join(
                        f", {k[:-2]} {entry[k] * 1e3:.3f} ms"
                        for k in ("lap_loop_s", "laprust_loop_s")
                        if k in entry
                    ),
                    flush=True,
                )
    return rows


@torch.no_grad()
def _original_design(
    outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]], focal: bool
):
    """The published matcher: one (B*Q, sum T) matrix, ``.cpu()``, scipy on the split."""
    bs, nq = outputs["pred_logits"].shape[:2]
    logits = outputs["pred_logits"].flatten(0, 1)
    out_bbox = outputs["pred_boxes"].flatten(0, 1)
    tgt_ids = torch.cat([v["labels"] for v in targets])
    tgt_bbox = torch.cat([v["boxes"] for v in targets])
    if focal:
        p = logits.sigmoid()
        neg = 0.75 * (p**2) * (-(1 - p + 1e-8).log())
        pos = 0.25 * ((1 - p) ** 2) * (-(p + 1e-8).log())
        cost_class, w_class = pos[:, tgt_ids] - neg[:, tgt_ids], 2.0
    else:
        cost_class, w_class = -logits.softmax(-1)[:, tgt_ids], 1.0
    cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
    cost_giou = -generalized_box_iou(
        box_convert(out_bbox, "cxcywh", "xyxy"), box_convert(tgt_bbox, "cxcywh", "xyxy")
    )
    c = (5.0 * cost_bbox + w_class * cost_class + 2.0 * cost_giou).view(bs, nq, -1).cpu()
    sizes = [len(v["boxes"]) for v in targets]
    indices = [scipy_lsa(block[i]) for i, block in enumerate(c.split(sizes, -1))]
    return [
        (torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64))
        for i, j in indices
    ]


def bench_matcher_step(repeats: int) -> list[dict[str, Any]]:
    """B=4, Q=300, 91 classes, 6 decoder layers (aux outputs), COCO-like target counts.

    Three contenders, interleaved within each repeat, one thread each (torch and the
    solver): the original design layer by layer, ``HungarianMatcher`` layer by layer, and
    ``HungarianMatcher.match_all`` over the layers (what a training step calls). Medians of
    thread CPU time (``*_s``: robust to other jobs on the machine) and of wall time
    (``*_wall_s``).
    """
    g = torch.Generator().manual_seed(0)
    bs, nq, classes, layers = 4, 300, 91, 6
    # COCO train2017 has ~7.3 objects per image with a long tail; a fixed draw from it.
    sizes = [3, 7, 12, 26]
    targets = [
        {
            "labels": torch.randint(0, classes, (n,), generator=g),
            "boxes": torch.rand(n, 4, generator=g) * 0.5 + 0.25,
        }
        for n in sizes
    ]
    per_layer = [
        {
            "pred_logits": torch.randn(bs, nq, classes, generator=g),
            "pred_boxes": torch.rand(bs, nq, 4, generator=g) * 0.5 + 0.25,
        }
        for _ in range(layers)
    ]
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for focal in (False, True):
            ours = (HungarianMatcher.deformable_detr if focal else HungarianMatcher.detr)(
                n_threads=1
            )
            contenders: dict[str, Callable[[], Any]] = {
                "original": lambda focal=focal: [
                    _original_design(o, targets, focal) for o in per_layer
                ],
                "matcher_rs_per_layer": lambda ours=ours: [ours(o, targets) for o in per_layer],
                "matcher_rs": lambda ours=ours: ours.match_all([(o, targets) for o in per_layer]),
            }
            # Same matchings (the costs are equal up to float rounding; no ties here).
            want = contenders["original"]()
            for got in (contenders["matcher_rs_per_layer"](), contenders["matcher_rs"]()):
                for a, b in zip(want, got, strict=True):
                    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
            cpu: dict[str, list[float]] = {k: [] for k in contenders}
            wall: dict[str, list[float]] = {k: [] for k in contenders}
            for _ in range(repeats):
                for name, fn in contenders.items():
                    w, c, _ = matcher_square.time_call(fn)
                    cpu[name].append(c)
                    wall[name].append(w)
            entry: dict[str, Any] = {
                "B": bs,
                "Q": nq,
                "layers": layers,
                "T_i": sizes,
                "class_cost": "focal" if focal else "softmax",
                "device": "cpu",
                "threads": 1,
                "repeats": repeats,
            }
            for name in contenders:
                entry[f"{name}_s"] = float(np.median(cpu[name]))
                entry[f"{name}_wall_s"] = float(np.median(wall[name]))
            entry["speedup"] = entry["original_s"] / entry["matcher_rs_s"]
            entry["speedup_per_layer"] = entry["original_s"] / entry["matcher_rs_per_layer_s"]
            rows.append(entry)
            print(
                f"matcher step ({entry['class_cost']}, {layers} layers, 1 thread, CPU time): "
                f"original {entry['original_s'] * 1e3:.2f} ms, match_all "
                f"{entry['matcher_rs_s'] * 1e3:.2f} ms (x{entry['speedup']:.2f}), per layer "
                f"{entry['matcher_rs_per_layer_s'] * 1e3:.2f} ms (x{entry['speedup_per_layer']:.2f})",
                flush=True,
            )
    finally:
        torch.set_num_threads(threads)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes only (smoke run, written to scratch)"
    )
    parser.add_argument(
        "--output",
        default=None,
        help="results file (.json path or a name in benchmarks/results/); default "
        "results/matcher_cpu.json, or a scratch file with --quick",
    )
    parser.add_argument(
        "--parts",
        default="square,detr,step",
        help="comma-separated parts to run: square, detr, step (default: all)",
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= {"square", "detr", "step"}:
        parser.error(f"--parts takes square, detr, step; got {args.parts!r}")
    # One intra-op thread: on a small shared machine more threads only contend, and both
    # matcher designs then run their tensor ops alike (the solvers pick their own threads).
    torch.set_num_threads(1)
    square_sizes = [100, 300] if args.quick else [100, 300, 1000, 2000, 4000]
    square = matcher_square.bench(square_sizes, lap, laprust) if "square" in parts else []
    detr, step = [], []
    if "detr" in parts:
        if args.quick:
            detr = bench_detr_batches([2, 32], [300], [7, 20])
        else:
            detr = bench_detr_batches([2, 8, 32, 64], [100, 300, 900], [1, 7, 20, 100])
    if "step" in parts:
        step = bench_matcher_step(repeats=3 if args.quick else 31)
    path = write_json(
        results_path(args.output, "matcher_cpu", scratch=args.quick),
        {
            "anchors": {
                "scipy": importlib.import_module("scipy").__version__,
                "lap": getattr(lap, "__version__", None),
                "laprust": getattr(laprust, "__version__", None),
                "matcher_rs": matcher_rs.__version__,
            },
            "quick": args.quick,
            "parts": sorted(parts),
            "square_timing": "median thread CPU seconds (*_s) and wall seconds (*_wall_s), "
            "contenders interleaved within each repeat",
            "square_target": matcher_square.summary(square),
            "square_single_thread": square,
            "detr_batches": detr,
            "matcher_step": step,
        },
    )
    columns = ["kind", "n", "dtype", "matcher_rs_s", "speedup_vs_laprust", "avx_speedup"]
    print(format_table(square, columns))
    print(f"wrote {path}")
    png = path.with_suffix(".png")
    if square and matcher_square.plot(square, png):
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
