"""Summarise pilot training runs: per-epoch mean losses, every evaluation, and (for DETR) the
collapse probe of the last checkpoint, into one JSON file.

    python benchmarks/pilot_summary.py --out results/convergence_pilot_d.json \
        --run A=/work/pilot/A/runs/detr_seed0 --run F=... --images DATA/val \
        --note A="demo data, 1e-4" --note F="..." [--probe-init]

``--probe-init`` also probes the benchmark's DETR-DC5 at initialisation (its backbone from
the demo model), the control for "did training change anything"; ``--stages-of MODEL``
measures how much each backbone stage of ``MODEL`` varies over tokens and images. Runs made
with ``--detr-stage`` (another map than C5) are summarised but not probed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import environment

LOSSES = ("loss", "loss_ce", "loss_bbox", "loss_giou")


def summarise_run(folder: Path) -> dict[str, Any]:
    """Mean losses per epoch and the evaluations of the run in ``folder``."""
    epochs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    evals = []
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "train":
            epochs[record["epoch"]].append(record)
        elif record.get("event") == "eval":
            evals.append({k: record[k] for k in ("epoch", "step", "AP", "AP50") if k in record})
    per_epoch = [
        {
            "epoch": e,
            "steps": len(rs),
            **{k: sum(r[k] for r in rs) / len(rs) for k in LOSSES if k in rs[0]},
        }
        for e, rs in sorted(epochs.items())
    ]
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    return {"per_epoch": per_epoch, "evals": evals, "config": run.get("config", run)}


def reads_c5(folder: Path) -> bool:
    """Whether the run in ``folder`` is a DETR of the registry's shape (the probe loads it
    with ``zoo.load``): not one that ``--detr-stage`` made read an earlier stage."""
    stamp = folder / "stamp.json"
    if not stamp.exists():
        return True
    return json.loads(stamp.read_text())["protocol"].get("detr_stage", 4) == 4


def last_checkpoint(folder: Path) -> Path | None:
    steps = sorted((folder / "checkpoints").glob("step-*"))
    return steps[-1] if steps else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_FOLDER")
    parser.add_argument("--note", action="append", default=[], help="NAME=what it varied")
    parser.add_argument("--images", type=Path, default=None, help="images for the probe")
    parser.add_argument("--probe-init", action="store_true")
    parser.add_argument(
        "--stages-of",
        default=None,
        help="also measure how much each backbone stage of this model (zoo.load) varies "
        "over tokens and images, on --images",
    )
    parser.add_argument("--purpose", default="")
    args = parser.parse_args(argv)
    import bench_convergence as bc
    import detr_collapse_probe as dp
    import torch

    torch.set_num_threads(1)
    notes = dict(n.split("=", 1) for n in args.note)
    images = (
        sorted(p for p in args.images.iterdir() if p.suffix == ".png")[:8] if args.images else []
    )
    runs: dict[str, Any] = {}
    for item in args.run:
        name, folder = item.split("=", 1)
        runs[name] = {"varied": notes.get(name, ""), **summarise_run(Path(folder))}
        checkpoint = last_checkpoint(Path(folder))
        if images and checkpoint is not None and reads_c5(Path(folder)):
            runs[name]["probe"] = {**dp.probe(str(checkpoint), images), "source": checkpoint.name}
    payload: dict[str, Any] = {"environment": environment(), "purpose": args.purpose, "runs": runs}
    if args.probe_init and images:
        import zoo
        from zoo.weights.zoo_format import save_pretrained

        torch.manual_seed(0)
        bench = bc.parse_args(["--data-spec", "demo"])
        model = zoo.create_model("detr-r50-dc5", **bc.model_overrides(bench, "detr-r50-dc5"))
        bc.load_backbone(model, bench.backbone)
        with tempfile.TemporaryDirectory() as tmp:
            save_pretrained(model, tmp)
            payload["init_probe"] = {**dp.probe(tmp, images), "source": "initialisation, seed 0"}
    if args.stages_of and images:
        payload["stages"] = {
            "source": args.stages_of,
            "rows": dp.stage_spreads(args.stages_of, images),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
