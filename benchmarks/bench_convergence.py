"""Convergence on synthetic shapes: DETR against Deformable DETR (+ refinement, two-stage).

Every variant is trained at the same small size (the demo model's: a ResNet-18 of width
24 with GroupNorm, from scratch; hidden size 64, 2 encoder and 3 decoder layers, 30
queries), on the same images, for the same number of steps with the same batch and
learning rate; COCO AP on the validation split is recorded after every epoch. The claim
under test (Zhu et al., 2021): Deformable DETR reaches DETR's final AP in at most a
fifth of DETR's steps. ``summary`` in the results records, per variant, the first
evaluated step at which it reached DETR's final AP and that step's fraction of DETR's.

Results: ``benchmarks/results/convergence_cpu.json`` and ``convergence_cpu.png``. Run
``make bench-convergence`` (about 40 minutes on a 2-core CPU) or
``python benchmarks/bench_convergence.py --quick`` for a smoke run of a minute or two
(written to a scratch file, see ``harness.SCRATCH``, unless ``--output`` is given).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from harness import format_table, results_path, write_json

import zoo
from zoo.data import CocoDetection, ResizeRecipe, eval_transforms, train_transforms
from zoo.data.shapes import CLASSES, ShapesSpec, generate
from zoo.training import TrainConfig, Trainer, read_metrics

VARIANTS = ("detr-r50", "ddetr", "ddetr-refine", "ddetr-two-stage")
# Every variant gets the same small backbone here, so DETR is named without its ResNet.
LABELS = {"detr-r50": "detr"}


def model_overrides(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """One small size for every variant (DETR has no levels or sampling points)."""
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
        sizes.update(num_levels=1 if name == "ddetr-single-scale" else 3)
    return sizes


def steps_to_reach(steps: list[int], values: list[float], target: float) -> int | None:
    """The first evaluated step whose value is at least ``target`` (None: never)."""
    return next((s for s, v in zip(steps, values, strict=True) if v >= target), None)


def summarize(results: dict[str, Any], baseline: str = "detr") -> dict[str, Any]:
    """Per variant: final AP/AP50, and when it first reached the baseline's final AP.

    ``fraction_of_baseline_steps`` is that step over the baseline's last step; the
    paper's claim holds for a variant when it is at most 0.2.
    """
    if baseline not in results:
        return {}
    base = results[baseline]
    target, base_steps = base["AP"][-1], base["steps"][-1]
    summary: dict[str, Any] = {"baseline": baseline, "baseline_final_AP": target}
    for name, res in results.items():
        reached = steps_to_reach(res["steps"], res["AP"], target)
        summary[name] = {
            "final_AP": res["AP"][-1],
            "final_AP50": res["AP50"][-1],
            "steps_to_baseline_final_AP": reached,
            "fraction_of_baseline_steps": None if reached is None else reached / base_steps,
        }
    return summary


def run_variant(
    name: str, data: Path, out: Path, args: argparse.Namespace, recipe: ResizeRecipe
) -> dict[str, Any]:
    """Train one variant; its AP after every epoch, against steps and seconds."""
    torch.manual_seed(args.seed)
    epochs = args.detr_epochs if name.startswith("detr") and args.detr_epochs else args.epochs
    model = zoo.create_model(name, **model_overrides(args, name))
    train = CocoDetection(
        data / "train",
        data / "annotations" / "train.json",
        train_transforms(recipe),
        seed=args.seed,
    )
    val = CocoDetection(data / "val", data / "annotations" / "val.json", eval_transforms(recipe))
    config = TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        # The backbone is random here: no pretrained features to protect with a lower rate.
        lr_backbone=args.lr,
        max_steps=args.max_steps,
        lr_drop=max(epochs * 2 // 3, 1),
        num_workers=args.workers,
        seed=args.seed,
        progress=not args.no_progress,
        keep_checkpoints=1,
    )
    start = time.perf_counter()
    Trainer(model, zoo.build_criterion(model.config), train, config, out, val).fit()
    seconds = time.perf_counter() - start
    evals = read_metrics(out / "metrics.jsonl", "eval")
    return {
        "steps": [e["step"] for e in evals],
        "AP": [e["AP"] for e in evals],
        "AP50": [e["AP50"] for e in evals],
        "train_seconds": seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def plot(results: dict[str, Any], path: Path) -> bool:
    """AP50 and AP against steps, one line per variant; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for metric, ax in zip(("AP50", "AP"), axes, strict=True):
        for name, res in results.items():
            ax.plot(res["steps"], res[metric], marker="o", label=name)
        ax.set_xlabel("training steps")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--size", type=int, default=128, help="image side")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument(
        "--detr-epochs",
        type=int,
        default=None,
        help="DETR's own budget (default --epochs). The claim only needs the deformable "
        "variants up to a fifth of DETR's steps: --epochs 12 --detr-epochs 60 tests it "
        "where DETR has had time to learn",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop every run here")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=24, help="ResNet-18 width")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--enc-layers", type=int, default=2)
    parser.add_argument("--dec-layers", type=int, default=3)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--name", default="convergence_cpu", help="results file name")
    parser.add_argument(
        "--output",
        default=None,
        help="results file (.json path or a name in results/); default results/NAME.json, "
        "or a scratch file with --quick",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.num_train, args.num_val, args.size, args.epochs = 32, 8, 64, 2
        args.width, args.hidden, args.enc_layers, args.dec_layers = 8, 32, 1, 1
        args.queries, args.workers, args.batch_size = 10, 0, 8
    recipe = ResizeRecipe.for_image_size(args.size)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = generate(
            Path(tmp) / "shapes",
            args.num_train,
            args.num_val,
            seed=args.seed,
            spec=ShapesSpec(size=args.size),
        )
        for name in args.variants:
            label = LABELS.get(name, name)
            results[label] = res = run_variant(name, data, Path(tmp) / name, args, recipe)
            print(f"{label}: AP50 {res['AP50']} ({res['train_seconds']:.0f} s)", flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("no_progress", "name")}
    summary = summarize(results)
    payload = {"settings": settings, "summary": summary, "results": results}
    path = write_json(results_path(args.output, args.name, scratch=args.quick), payload)
    rows = [
        {
            "variant": k,
            "steps": v["steps"][-1] if v["steps"] else None,
            "final AP50": v["AP50"][-1] if v["AP50"] else None,
            "final AP": v["AP"][-1] if v["AP"] else None,
            "train_seconds": v["train_seconds"],
        }
        for k, v in results.items()
    ]
    print(format_table(rows, ["variant", "steps", "final AP50", "final AP", "train_seconds"]))
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")
    png = path.with_suffix(".png")
    if plot(results, png):
        print(f"wrote {png}")
    else:
        print("matplotlib is not installed: no plot")


if __name__ == "__main__":
    main()
