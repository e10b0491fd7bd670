"""The papers' claims at small scale: DETR against Deformable DETR and its ablations.

Protocol (``make bench-convergence``; every number below is a flag):

- Data: 2,000 training and 300 validation images of 128 pixels from the shapes generator's
  multi-size setting (:meth:`zoo.data.shapes.ShapesSpec.multi_size`): objects from 4% to
  40% of the side, so COCO's small/medium/large buckets, scaled to 128-pixel images
  (:func:`zoo.data.areas.size_buckets`: small < 40.96 px², large >= 368.64 px²), each hold
  a share. The bucket counts are recorded with the results.
- Models: the demo model's size for every variant (ResNet-18 of width 24 with GroupNorm;
  hidden 64, 2 encoder and 3 decoder layers, 30 queries): DETR (C5 only), Deformable DETR
  single-scale (C5 only), multi-scale (C3-C5), + iterative box refinement, + two-stage (on
  top of refinement, as in the paper). Every backbone starts from the bundled demo model's
  (trained on the default shapes setting, a different seed and size range), the stand-in
  for the papers' ImageNet-pretrained ResNet-50, and trains at a tenth of the rate as there;
  ``--backbone scratch`` starts from random weights instead.
- Training: the same batch (16), learning rate (1e-3), seed and data order for every
  variant; DETR for ``--detr-epochs`` (120), the others for ``--epochs`` (24): DETR gets
  5x the steps, as the papers' 500 against 50 epochs give it 10x. The rate drops 10x after
  two thirds of each run. COCO AP, AP50, AP75, APs/m/l on the validation images after
  every epoch.

The claims under test (Zhu et al., ICLR 2021): Deformable DETR reaches DETR's final AP
in a fraction of DETR's training (10x fewer epochs in the paper; here the question is
whether the fraction is at most 0.2); it is better on small objects; multi-scale beats
single-scale; box refinement and two-stage each add AP. ``summary`` in the results
answers each; ``report_convergence.py`` turns result files into the README's tables.

Variants run in ``--jobs`` processes at once (default 2, one thread each on a 2-core
CPU); each variant's training is seeded and independent of the others.

Results: ``benchmarks/results/convergence_cpu.json`` and three plots beside it (``.png``:
AP against steps; ``_small.png``: AP on small objects against steps; ``_ablation.png``:
final AP and APs/m/l per variant). The JSON is rewritten after every finished variant, so
an interrupted run keeps what it finished. ``--quick``: a miniature of the protocol in
seconds, written to a scratch file (``harness.SCRATCH``) unless ``--output`` is given.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from harness import format_table, results_path, write_json

VARIANTS = ("detr-r50", "ddetr-single-scale", "ddetr", "ddetr-refine", "ddetr-two-stage")
# Every variant gets the same small backbone here, so DETR is named without its ResNet.
LABELS = {"detr-r50": "detr"}
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The ablation claims: summary key, the variant, the one it extends.
ABLATIONS = (
    ("multi_scale", "ddetr", "ddetr-single-scale"),
    ("refinement", "ddetr-refine", "ddetr"),
    ("two_stage", "ddetr-two-stage", "ddetr-refine"),
)

# The published figures on COCO val2017 (ResNet-50), from the official repository's
# "Main Results" table (fundamentalvision/Deformable-DETR; the paper's Table 1 has the DETR
# row and slightly older Deformable DETR runs): DETR at 500 epochs, the others at 50.
PAPER = {
    "detr": {"epochs": 500, "AP": 42.0, "APs": 20.5, "APm": 45.8, "APl": 61.1},
    "ddetr-single-scale": {"epochs": 50, "AP": 39.4, "APs": 20.6, "APm": 43.0, "APl": 55.5},
    "ddetr": {"epochs": 50, "AP": 44.5, "APs": 27.1, "APm": 47.6, "APl": 59.6},
    "ddetr-refine": {"epochs": 50, "AP": 46.2, "APs": 28.3, "APm": 49.2, "APl": 61.5},
    "ddetr-two-stage": {"epochs": 50, "AP": 46.9, "APs": 29.6, "APm": 50.1, "APl": 61.6},
}


def label(name: str) -> str:
    """The name a variant has in the results."""
    return LABELS.get(name, name)


def model_overrides(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """One small size for every variant (DETR has no levels or sampling points)."""
    from zoo.data.shapes import CLASSES

    sizes: dict[str, Any] = {
        "depth": 18,
        "width": args.width,
        "norm": "group",
        "hidden_dim": args.hidden,
        "nheads": 4,
        "enc_layers": args.enc_layers,
        "dec_layers": args.dec_layers,
        "ffn_dim": 4 * args.hidden,
        "num_queries": args.queries,
        "num_classes": len(CLASSES),
        "class_names": CLASSES,
        "image_size": args.size,
        "dropout": 0.0,
    }
    if name.startswith("ddetr"):
        # Single-scale: C5 alone, as the paper's ablation; the others C3-C5.
        sizes.update(num_levels=1 if name == "ddetr-single-scale" else 3)
    return sizes


def backbone_lr(args: argparse.Namespace) -> float:
    """A tenth of ``lr`` for a pretrained backbone (the papers' ratio); ``lr`` from scratch."""
    if args.lr_backbone is not None:
        return float(args.lr_backbone)
    return args.lr if args.backbone == "scratch" else args.lr / 10


def load_backbone(model: Any, source: str) -> None:
    """Copy the backbone of model ``source`` (a name or folder for ``zoo.load``) into ``model``.

    The stand-in for the papers' ImageNet-pretrained ResNet: every variant starts from the
    same trained feature extractor. Raises ValueError when the backbones differ in shape.
    """
    import zoo

    donor = zoo.load(source).backbone.state_dict()
    target = model.backbone.state_dict()
    shapes = {k: tuple(v.shape) for k, v in target.items()}
    if {k: tuple(v.shape) for k, v in donor.items()} != shapes:
        raise ValueError(
            f"--backbone {source}: its backbone does not match the benchmark's "
            f"(ResNet-{model.config.backbone.depth}, width {model.config.backbone.width})"
        )
    model.backbone.load_state_dict(donor)


def epochs_for(name: str, args: argparse.Namespace) -> int:
    """DETR's own budget, or the common one."""
    return args.detr_epochs if name.startswith("detr") and args.detr_epochs else args.epochs


def steps_to_reach(steps: list[int], values: list[float], target: float) -> int | None:
    """The first evaluated step whose value is at least ``target`` (None: never)."""
    return next((s for s, v in zip(steps, values, strict=True) if v >= target), None)


def value_at(steps: list[int], values: list[float], step: int) -> float | None:
    """The value at the last evaluation at or before ``step`` (None: none that early)."""
    earlier = [v for s, v in zip(steps, values, strict=True) if s <= step]
    return earlier[-1] if earlier else None


def _final(res: dict[str, Any]) -> dict[str, float]:
    return {m: res[m][-1] for m in METRICS if res.get(m)}


def _gain(results: dict[str, Any], better: str, base: str, metric: str) -> dict[str, Any] | None:
    if not (results.get(better, {}).get(metric) and results.get(base, {}).get(metric)):
        return None
    a, b = results[better][metric][-1], results[base][metric][-1]
    return {better: a, base: b, "difference": a - b, "agrees_with_paper": a > b}


def summarize(results: dict[str, Any], baseline: str = "detr") -> dict[str, Any]:
    """One entry per claim, from the per-epoch curves in ``results``.

    - ``final``: every variant's last evaluation (AP, AP50, AP75, APs/m/l).
    - ``epochs_to_detr_final_AP``: per variant, the first evaluated step at or above
      DETR's final AP and that step over DETR's last step (``fraction_of_detr_steps``);
      the paper's claim, with DETR at 5x the others' budget, holds when it is <= 0.2.
    - ``small_objects``: final APs of DETR and multi-scale Deformable DETR, and both at
      the same step (the deformable variants' last).
    - ``multi_scale``, ``refinement``, ``two_stage``: final AP and APs of each variant
      against the one it extends, with the difference.
    """
    summary: dict[str, Any] = {
        "final": {name: _final(res) for name, res in results.items()},
    }
    if baseline in results and results[baseline]["AP"]:
        base = results[baseline]
        target, base_steps = base["AP"][-1], base["steps"][-1]
        reach: dict[str, Any] = {"baseline": baseline, "baseline_final_AP": target}
        for name, res in results.items():
            reached = steps_to_reach(res["steps"], res["AP"], target)
            fraction = None if reached is None else reached / base_steps
            reach[name] = {
                "steps": reached,
                "fraction_of_detr_steps": fraction,
                "within_a_fifth": fraction is not None and fraction <= 0.2,
            }
        summary["epochs_to_detr_final_AP"] = reach
        if "ddetr" in results and results["ddetr"]["APs"]:
            ms = results["ddetr"]
            same_step = ms["steps"][-1]
            summary["small_objects"] = {
                "final_APs": {baseline: base["APs"][-1], "ddetr": ms["APs"][-1]},
                "at_step": same_step,
                "APs_at_step": {
                    baseline: value_at(base["steps"], base["APs"], same_step),
                    "ddetr": ms["APs"][-1],
                },
                "agrees_with_paper": ms["APs"][-1] > base["APs"][-1],
            }
    for claim, better, base_name in ABLATIONS:
        entry = {m: _gain(results, better, base_name, m) for m in ("AP", "APs")}
        if entry["AP"] is not None:
            summary[claim] = entry
    return summary


def run_variant(
    name: str, data: str, out: str, args: argparse.Namespace, threads: int
) -> dict[str, Any]:
    """Train one variant (in its own process); its metrics after every epoch."""
    import torch

    import zoo
    from zoo.data import CocoDetection, ResizeRecipe, eval_transforms, train_transforms
    from zoo.data.areas import size_buckets
    from zoo.training import TrainConfig, Trainer, read_metrics

    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    recipe = ResizeRecipe.for_image_size(args.size)
    root, work = Path(data), Path(out)
    epochs = epochs_for(name, args)
    model = zoo.create_model(name, **model_overrides(args, name))
    if args.backbone != "scratch":
        load_backbone(model, args.backbone)
    train = CocoDetection(
        root / "train",
        root / "annotations" / "train.json",
        train_transforms(recipe),
        seed=args.seed,
    )
    val = CocoDetection(root / "val", root / "annotations" / "val.json", eval_transforms(recipe))
    config = TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_backbone=backbone_lr(args),
        max_steps=args.max_steps,
        lr_drop=max(epochs * 2 // 3, 1),
        num_workers=args.workers,
        seed=args.seed,
        progress=not args.no_progress,
        keep_checkpoints=1,
        eval_area_thresholds=size_buckets(args.size),
    )
    start = time.perf_counter()
    Trainer(model, zoo.build_criterion(model.config), train, config, work, val).fit()
    seconds = time.perf_counter() - start
    evals = read_metrics(work / "metrics.jsonl", "eval")
    result: dict[str, Any] = {
        "variant": name,
        "epochs": [e["epoch"] for e in evals],
        "steps": [e["step"] for e in evals],
        **{m: [e[m] for e in evals] for m in METRICS},
        "train_seconds": seconds,
        "threads": threads,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return result


def dataset_stats(data: Path, size: int) -> dict[str, Any]:
    """Images, objects and objects per size bucket in each split."""
    from zoo.data.areas import bucket_counts

    stats = {}
    for split in ("train", "val"):
        coco = json.loads((data / "annotations" / f"{split}.json").read_text())
        areas = [a["area"] for a in coco["annotations"]]
        stats[split] = {
            "images": len(coco["images"]),
            "objects": len(areas),
            "buckets": bucket_counts(areas, size),
        }
    return stats


def plot(results: dict[str, Any], path: Path) -> list[Path]:
    """Three figures beside ``path``; none when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for suffix, metrics in (("", ("AP", "AP50")), ("_small", ("APs", "APm"))):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for metric, ax in zip(metrics, axes, strict=True):
            for name, res in results.items():
                ax.plot(res["steps"], res[metric], marker=".", label=name)
            ax.set_xlabel("training steps (batch 16)")
            ax.set_ylabel(metric)
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        out = path.with_name(path.stem + suffix + ".png")
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    fig, ax = plt.subplots(figsize=(11, 4))
    names = list(results)
    bars = ("AP", "APs", "APm", "APl")
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        final = _final(results[name])
        xs = [j + i * width for j in range(len(bars))]
        ax.bar(xs, [max(final.get(b, 0.0), 0.0) for b in bars], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(bars))], bars)
    ax.set_ylabel("final value")
    ax.set_title("after each variant's last epoch")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out = path.with_name(path.stem + "_ablation.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    written.append(out)
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="miniature protocol (scratch)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=300)
    parser.add_argument("--size", type=int, default=128, help="image side")
    parser.add_argument("--epochs", type=int, default=24, help="the deformable variants'")
    parser.add_argument(
        "--detr-epochs", type=int, default=120, help="DETR's own budget (0: --epochs)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop every run here")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=24, help="ResNet-18 width")
    parser.add_argument(
        "--backbone",
        default="shapes-demo",
        help="where every variant's backbone starts: a model whose backbone has the "
        "benchmark's size (default the bundled demo model's, trained on the default shapes "
        "setting), or 'scratch' (random)",
    )
    parser.add_argument(
        "--lr-backbone", type=float, default=None, help="default lr/10, or lr from scratch"
    )
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--enc-layers", type=int, default=2)
    parser.add_argument("--dec-layers", type=int, default=3)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--workers", type=int, default=0, help="data loader processes per run")
    parser.add_argument("--jobs", type=int, default=2, help="variants trained at once (processes)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per job (default: CPUs / jobs)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--name", default="convergence_cpu", help="results file name")
    parser.add_argument(
        "--output",
        default=None,
        help="results file (.json path or a name in results/); default results/NAME.json, "
        "or a scratch file with --quick",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the runs' folders here (default: temp)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.num_train, args.num_val, args.size, args.epochs, args.detr_epochs = 48, 16, 64, 2, 4
        args.width, args.hidden, args.enc_layers, args.dec_layers = 8, 32, 1, 1
        args.queries, args.batch_size, args.backbone = 10, 8, "scratch"
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    for flag in ("jobs", "epochs", "num_train", "num_val", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from zoo.data.areas import size_buckets
    from zoo.data.shapes import ShapesSpec, generate

    path = results_path(args.output, args.name, scratch=args.quick)
    # The longest run first, so that it never waits for a free process at the end.
    order = sorted(args.variants, key=lambda n: -epochs_for(n, args))
    jobs = min(args.jobs, len(order))
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    settings = {k: v for k, v in vars(args).items() if k not in ("no_progress", "name")}
    settings.update(workdir=str(args.workdir) if args.workdir else None, threads_per_job=threads)
    small, medium = size_buckets(args.size)
    protocol = {
        "dataset": "zoo.data.shapes ShapesSpec.multi_size",
        "area_thresholds": {"small_below": small, "large_from": medium},
        "epochs": {label(n): epochs_for(n, args) for n in order},
        "seed": args.seed,
        "concurrency": f"{jobs} variants at once, {threads} thread(s) each",
    }
    results: dict[str, Any] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        data = generate(
            work / "shapes",
            args.num_train,
            args.num_val,
            seed=args.seed,
            spec=ShapesSpec.multi_size(args.size),
        )
        stats = dataset_stats(data, args.size)
        print(f"data: {json.dumps(stats)}", flush=True)

        def save(partial: bool) -> None:
            ordered = {label(n): results[label(n)] for n in args.variants if label(n) in results}
            payload = {
                "protocol": protocol,
                "settings": settings,
                "dataset": stats,
                "paper": PAPER,
                "wall_seconds": time.perf_counter() - start,
                "partial": partial,
                "summary": summarize(ordered),
                "results": ordered,
            }
            write_json(path, payload)

        # Spawned processes: no fork of a process that already holds torch's threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures: dict[Future, str] = {
                pool.submit(run_variant, n, str(data), str(work / n), args, threads): n
                for n in order
            }
            for future in as_completed(futures):
                name = futures[future]
                res = future.result()  # a failed run stops the benchmark, named
                results[label(name)] = res
                print(
                    f"{label(name)}: AP {res['AP'][-1]:.3f} AP50 {res['AP50'][-1]:.3f} "
                    f"APs {res['APs'][-1]:.3f} after {res['steps'][-1]} steps "
                    f"({res['train_seconds']:.0f} s)",
                    flush=True,
                )
                save(partial=True)
    save(partial=False)
    ordered = {label(n): results[label(n)] for n in args.variants}
    rows = [
        {"variant": k, "steps": v["steps"][-1], **_final(v), "train_seconds": v["train_seconds"]}
        for k, v in ordered.items()
    ]
    print(format_table(rows, ["variant", "steps", *METRICS, "train_seconds"]))
    print(json.dumps(summarize(ordered), indent=1))
    print(f"wrote {path}")
    figures = plot(ordered, path)
    for figure in figures:
        print(f"wrote {figure}")
    if not figures:
        print("matplotlib is not installed: no plots")


if __name__ == "__main__":
    main()
