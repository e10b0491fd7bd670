"""The papers' claims at small scale: DETR-DC5 against Deformable DETR and its ablations.

Protocol (``make bench-convergence``; every number below is a flag; ``docs/convergence.md``
explains the choices and the pilot that fixed them):

- Data: ``--num-train`` training and ``--num-val`` validation images of ``--size`` pixels
  from the shapes generator's multi-size setting (:meth:`zoo.data.shapes.ShapesSpec.multi_size`):
  objects from 4% to 40% of the side, so COCO's small/medium/large buckets, scaled to the
  image (:func:`zoo.data.areas.size_buckets`), each hold a share. One data set
  (``--data-seed``) for every variant and seed; its bucket counts are recorded.
  ``--data-spec demo`` takes the bundled model's setting instead (1-5 shapes, 12-45%), for pilots.
- Models: the demo model's size for every variant (ResNet-18 of width 24 with GroupNorm;
  hidden 64, 2 encoder and 3 decoder layers, ``--queries`` queries): DETR-DC5 (C5 dilated,
  stride 16, as the paper's DETR-DC5), Deformable DETR single-scale on the same DC5 map
  (the official "single scale, DC5"), multi-scale (C3-C5), + iterative box refinement,
  + two-stage (on top of refinement). Every backbone starts from the bundled demo
  model's (trained on the default shapes setting, a different seed and size range), the
  stand-in for the papers' ImageNet-pretrained ResNet-50; ``--backbone scratch`` starts
  from random weights instead.
- Training: the official recipes: DETR at 1e-4 (backbone 1e-5), Deformable DETR at 2e-4
  (backbone a tenth, sampling offsets a tenth), neither scaled to the batch, dropout 0.1,
  gradient clip 0.1; the same batch and data order for every variant of a seed;
  DETR for ``--detr-epochs``, the others for ``--epochs``; the rate drops 10x after two
  thirds of each run. COCO AP, AP50, AP75, APs/m/l on the validation images after every
  epoch.

The claims under test (Zhu et al., ICLR 2021), answered per seed and across ``--seeds`` by
:mod:`convergence_claims`: Deformable DETR reaches DETR's final AP in a tenth of DETR's
epochs; it is better on small objects; multi-scale beats single-scale; box refinement and
two-stage each add AP. Claims about DETR count only when DETR's final AP50 passes the gate.

Resumable: each finished (variant, seed) run is written at once to its own file,
``results/NAME/<variant>_seed<k>.json``; a later call skips the runs whose file exists
with the same protocol (and refuses one recorded under another protocol). A run
interrupted half-way (killed, the machine stopped) continues on the next call from its
newest checkpoint in ``--workdir`` (default ``results/NAME.work``, git-ignored), exactly as
the trainer resumes, so an interruption loses nothing but the steps since that checkpoint
(one epoch at most). After every
finished run ``results/NAME.json`` is rebuilt from all the run files: curves, the claims
per seed and across seeds. ``report_convergence.py`` turns it into tables and plots.
Runs go ``--jobs`` at a time (processes of ``--threads`` threads), seed by seed, the
longest of a seed first.
``--quick``: a miniature of the protocol in seconds, written to a scratch folder.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from convergence_claims import METRICS, final
from convergence_files import finished, run_file, write_summary
from convergence_protocol import (
    DATA_SPECS,
    VARIANTS,
    data_spec,
    dataset_stats,
    epochs_for,
    label,
    load_backbone,
    model_overrides,
    protocol_of,
    rates,
    read_stage,
)
from harness import format_table, results_path, write_json

__all__ = ["VARIANTS", "data_spec", "load_backbone", "main", "model_overrides", "parse_args"]
__all__ += ["protocol_of", "rates", "run_variant"]


def resumable(work: Path, stamp: dict[str, Any]) -> bool:
    """Whether ``work`` holds a checkpointed run of ``stamp`` (protocol, variant, seed)."""
    try:
        recorded = json.loads((work / "stamp.json").read_text())
    except (OSError, ValueError):
        return False
    return recorded == json.loads(json.dumps(stamp)) and any((work / "checkpoints").glob("step-*"))


_WATCHING = False


def exit_with_parent(poll: float = 1.0) -> None:
    """In a worker process: end it when the benchmark that started it is gone.

    Killing the benchmark (SIGKILL, a closed terminal) does not reach the pool's spawned
    workers, which would go on training unseen and hold a core each; the next call resumes
    their runs from the last checkpoint anyway. A no-op in the main process.
    """
    global _WATCHING
    import multiprocessing
    import threading

    if _WATCHING or multiprocessing.parent_process() is None:
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()
    _WATCHING = True


def run_variant(
    name: str, seed: int, data: str, out: str, args: argparse.Namespace, threads: int
) -> dict[str, Any]:
    """Train one variant with one seed (in its own process); its metrics after every epoch."""
    import shutil

    exit_with_parent()

    import torch

    import zoo
    from zoo.data import CocoDetection, ResizeRecipe, eval_transforms, train_transforms
    from zoo.data.areas import size_buckets
    from zoo.training import TrainConfig, Trainer, read_metrics

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    recipe = ResizeRecipe.for_image_size(args.size)
    root, work = Path(data), Path(out)
    # A run interrupted earlier (same protocol, variant and seed) continues from its newest
    # intact checkpoint, exactly (the trainer's resume); anything else starts from nothing.
    stamp = {"protocol": protocol_of(args), "variant": name, "seed": seed}
    resume = resumable(work, stamp)
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "stamp.json").write_text(json.dumps(stamp, indent=1) + "\n")
    epochs = epochs_for(name, args)
    model = zoo.create_model(name, **model_overrides(args, name))
    if args.backbone != "scratch":
        load_backbone(model, args.backbone)
    if name.startswith("detr"):
        read_stage(model, args.detr_stage)
    train = CocoDetection(
        root / "train",
        root / "annotations" / "train.json",
        train_transforms(recipe),
        seed=seed,
    )
    val = CocoDetection(root / "val", root / "annotations" / "val.json", eval_transforms(recipe))
    lr, lr_backbone = rates(args, name)
    config = TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=lr,
        lr_backbone=lr_backbone,
        max_steps=args.max_steps,
        lr_drop=max(epochs * 2 // 3, 1),
        num_workers=args.workers,
        seed=seed,
        progress=not args.no_progress,
        keep_checkpoints=1,
        eval_area_thresholds=size_buckets(args.size),
    )
    start = time.perf_counter()
    trainer = Trainer(model, zoo.build_criterion(model.config), train, config, work, val)
    if resume:
        trainer.resume(work)
    resumed_from = trainer.step
    trainer.fit()
    seconds = time.perf_counter() - start
    evals = read_metrics(work / "metrics.jsonl", "eval")
    result: dict[str, Any] = {
        "variant": name,
        "seed": seed,
        "lr": lr,
        "lr_backbone": lr_backbone,
        "epochs": [e["epoch"] for e in evals],
        "steps": [e["step"] for e in evals],
        **{m: [e[m] for e in evals] for m in METRICS},
        "train_seconds": seconds,  # of this call: a resumed run's earlier part not counted
        "resumed_from_step": resumed_from,
        "threads": threads,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="miniature protocol (scratch)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0, help="the one data set's seed")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=300)
    parser.add_argument("--size", type=int, default=128, help="image side")
    parser.add_argument(
        "--data-spec",
        choices=sorted(DATA_SPECS),
        default="multi-size",
        help="the shapes setting: multi-size (2-8 shapes, 4-40%% of the side, log-uniform) "
        "or demo (the bundled model's: 1-5 shapes, 12-45%%)",
    )
    parser.add_argument("--epochs", type=int, default=10, help="the deformable variants'")
    parser.add_argument(
        "--detr-epochs", type=int, default=100, help="DETR's own budget (0: --epochs)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop every run here")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4, help="Deformable DETR's rate")
    parser.add_argument("--lr-backbone", type=float, default=None, help="default lr/10")
    parser.add_argument("--detr-lr", type=float, default=1e-4, help="DETR's rate")
    parser.add_argument("--detr-lr-backbone", type=float, default=None, help="default lr/10")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument(
        "--dc5",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="C5 at stride 16 (dilated) for DETR and single-scale Deformable DETR",
    )
    parser.add_argument(
        "--detr-stage",
        type=int,
        choices=(2, 3, 4),
        default=4,
        help="the backbone stage DETR reads (a pilot's knob): 4 = C5 (default, DC5 with "
        "--dc5), 3 = C4, 2 = C3; the later stages go unused",
    )
    parser.add_argument("--width", type=int, default=24, help="ResNet-18 width")
    parser.add_argument(
        "--backbone",
        default="shapes-demo",
        help="where every variant's backbone starts: a model whose backbone has the "
        "benchmark's size (default the bundled demo model's, trained on the default shapes "
        "setting), or 'scratch' (random)",
    )
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--enc-layers", type=int, default=2)
    parser.add_argument("--dec-layers", type=int, default=3)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--workers", type=int, default=0, help="data loader processes per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once (processes)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per job (default: CPUs / jobs)"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--name", default="convergence_cpu", help="results name")
    parser.add_argument(
        "--output",
        default=None,
        help="summary file (.json path or a name in results/); the run files go to the "
        "folder of the same name beside it; default results/NAME.json, or a scratch file "
        "with --quick",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="the data and the runs' folders, kept so that an interrupted run resumes "
        "(default: results/NAME.work beside the summary, git-ignored)",
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
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds: repeated seeds in {args.seeds}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from zoo.data.shapes import generate

    path = results_path(args.output, args.name, scratch=args.quick)
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    protocol = protocol_of(args)
    todo = [
        (n, seed)
        for seed in args.seeds
        for n in args.variants
        if not finished(run_file(folder, n, seed), protocol)
    ]
    skipped = len(args.seeds) * len(args.variants) - len(todo)
    print(f"{len(todo)} runs to do, {skipped} finished already in {folder}", flush=True)
    # Seed by seed (an interrupted benchmark leaves whole seeds), the longest run of a
    # seed first so that it never waits for a free process at the end.
    todo.sort(key=lambda run: (args.seeds.index(run[1]), -epochs_for(run[0], args)))
    jobs = max(1, min(args.jobs, len(todo)))
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    start = time.perf_counter()
    # Kept between calls, so that a run interrupted half-way continues where it stopped.
    work = args.workdir or path.with_suffix(".work")
    data = generate(
        work / "shapes",
        args.num_train,
        args.num_val,
        seed=args.data_seed,
        spec=data_spec(args.data_spec, args.size),
    )
    stats = dataset_stats(data, args.size)
    print(f"data: {json.dumps(stats)}", flush=True)
    # The summary exists from the start (claims "pending" until their runs finish).
    write_summary(path, folder, protocol, stats, start)
    # Spawned processes: no fork of a process that already holds torch's threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures: dict[Future, tuple[str, int]] = {
            pool.submit(
                run_variant,
                n,
                seed,
                str(data),
                str(work / "runs" / f"{label(n)}_seed{seed}"),
                args,
                threads,
            ): (n, seed)
            for n, seed in todo
        }
        for future in as_completed(futures):
            name, seed = futures[future]
            res = future.result()  # a failed run stops the benchmark, named
            record = {"protocol": protocol, "label": label(name), "seed": seed, "result": res}
            write_json(run_file(folder, name, seed), record)
            print(
                f"{label(name)} seed {seed}: AP {res['AP'][-1]:.3f} "
                f"AP50 {res['AP50'][-1]:.3f} APs {res['APs'][-1]:.3f} after "
                f"{res['epochs'][-1]} epochs ({res['train_seconds']:.0f} s)",
                flush=True,
            )
            write_summary(path, folder, protocol, stats, start)
    payload = write_summary(path, folder, protocol, stats, start)
    for seed, results in payload["runs"].items():
        rows = [
            {"variant": k, "epochs": v["epochs"][-1], **final(v), "seconds": v["train_seconds"]}
            for k, v in results.items()
        ]
        print(f"seed {seed}")
        print(format_table(rows, ["variant", "epochs", *METRICS, "seconds"]))
    print(json.dumps(payload["summary"], indent=1))
    print(f"wrote {path} (run files in {folder})")


if __name__ == "__main__":
    main()
