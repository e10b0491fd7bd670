"""Convergence on synthetic shapes: DETR against Deformable DETR (+ refinement, two-stage).

Every variant is trained at the same small size (ResNet-18 from scratch, equal hidden
size, layers and queries), on the same images, for the same number of steps with the same
batch; COCO AP on the validation split is recorded after every epoch. Deformable DETR's
claim (much faster convergence than DETR) should show as a steeper AP-vs-steps curve.

Results: ``benchmarks/results/convergence_cpu.json`` and, when matplotlib is installed,
``convergence_cpu.png``. Run ``python benchmarks/bench_convergence.py`` (``--quick`` for a
smoke run of a minute or two).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS, write_results

import zoo
from zoo.data import CocoDetection, ResizeRecipe, eval_transforms, train_transforms
from zoo.data.shapes import CLASSES, ShapesSpec, generate
from zoo.training import TrainConfig, Trainer, read_metrics

VARIANTS = ("detr-r50", "ddetr", "ddetr-refine", "ddetr-two-stage")


def model_overrides(name: str, hidden: int, layers: int, queries: int) -> dict[str, Any]:
    """One small size for every variant (DETR has no levels or sampling points)."""
    sizes: dict[str, Any] = {
        "depth": 18,
        "hidden_dim": hidden,
        "nheads": 4,
        "enc_layers": layers,
        "dec_layers": layers,
        "ffn_dim": 4 * hidden,
        "num_queries": queries,
        "num_classes": len(CLASSES),
        "dropout": 0.0,
    }
    if name.startswith("ddetr"):
        sizes.update(num_levels=1 if name == "ddetr-single-scale" else 3)
    return sizes


def run_variant(
    name: str, data: Path, out: Path, args: argparse.Namespace, recipe: ResizeRecipe
) -> dict[str, Any]:
    """Train one variant; its AP after every epoch, against steps and seconds."""
    torch.manual_seed(args.seed)
    model = zoo.create_model(name, **model_overrides(name, args.hidden, args.layers, args.queries))
    train = CocoDetection(
        data / "train",
        data / "annotations" / "train.json",
        train_transforms(recipe),
        seed=args.seed,
    )
    val = CocoDetection(data / "val", data / "annotations" / "val.json", eval_transforms(recipe))
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        # The backbone is random here: no pretrained features to protect with a lower rate.
        lr_backbone=args.lr,
        lr_drop=max(args.epochs * 2 // 3, 1),
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
    parser.add_argument("--num-train", type=int, default=512)
    parser.add_argument("--num-val", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="image side")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--name", default="convergence_cpu", help="results file name")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_train, args.num_val, args.size, args.epochs = 16, 8, 64, 2
        args.hidden, args.layers, args.queries, args.workers = 32, 1, 10, 0
        args.name += "_quick"
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
            results[name] = run_variant(name, data, Path(tmp) / name, args, recipe)
            print(f"{name}: AP50 {results[name]['AP50']} ({results[name]['train_seconds']:.0f} s)")
    settings = {k: v for k, v in vars(args).items() if k not in ("no_progress", "name")}
    path = write_results(args.name, {"settings": settings, "results": results})
    print(f"wrote {path}")
    png = RESULTS / f"{args.name}.png"
    if plot(results, png):
        print(f"wrote {png}")
    else:
        print("matplotlib is not installed: no plot")


if __name__ == "__main__":
    main()
