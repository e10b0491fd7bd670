"""DDP on CPU (gloo, 2 processes): ranks stay in sync, distributed evaluation == single-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from support.shapes import shapes_data, shapes_model, shapes_sets
from torch.utils.data import DataLoader

import zoo
from zoo.data import collate
from zoo.data.coco_eval import evaluate, gather_results, predict_batches, to_coco_results
from zoo.training import TrainConfig, Trainer
from zoo.training.distributed import ShardSampler

WORLD = 2
CONFIG = TrainConfig(epochs=1, batch_size=2, num_workers=0, eval_every=1, progress=False)


def _worker(rank: int, data: Path, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{out / 'rendezvous'}", rank=rank, world_size=WORLD
    )
    try:
        train, val = shapes_sets(data)
        model = shapes_model()
        if rank == 1:
            # DDP must broadcast rank 0's weights: start rank 1 elsewhere.
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.5)
        trainer = Trainer(model, zoo.build_criterion(model.config), train, CONFIG, out / "run", val)
        metrics = trainer.fit()
        loader = DataLoader(
            val, batch_size=2, sampler=ShardSampler(len(val), trainer.info), collate_fn=collate
        )
        results = gather_results(
            to_coco_results(predict_batches(model, loader), val.label_to_category)
        )
        save_file(model.state_dict(), str(out / f"rank{rank}.safetensors"))
        (out / f"rank{rank}.json").write_text(
            json.dumps({"metrics": metrics, "results": results, "step": trainer.step})
        )
    finally:
        dist.destroy_process_group()


def _scores(results: list[dict]) -> dict[tuple[int, int], list[float]]:
    """Sorted scores per (image, category): independent of the order ranks gathered them in."""
    out: dict[tuple[int, int], list[float]] = {}
    for r in results:
        out.setdefault((r["image_id"], r["category_id"]), []).append(r["score"])
    return {k: sorted(v) for k, v in out.items()}


def test_ddp_two_processes_on_cpu(tmp_path: Path) -> None:
    data = shapes_data(tmp_path / "data", num_train=8, num_val=5)  # 5: uneven shards
    mp.spawn(_worker, args=(data, tmp_path), nprocs=WORLD, join=True)
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(WORLD)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    runs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert runs[0]["step"] == runs[1]["step"] == 2  # 8 images / (2 per batch x 2 processes)
    assert runs[0]["metrics"] == runs[1]["metrics"]

    # The same model evaluated in one process.
    _, val = shapes_sets(data)
    model = shapes_model()
    model.load_state_dict(weights[0])
    loader = DataLoader(val, batch_size=2, collate_fn=collate)
    single = to_coco_results(predict_batches(model, loader), val.label_to_category)
    assert len({r["image_id"] for r in single}) == 5
    got, want = _scores(runs[0]["results"]), _scores(single)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-4), key
    metrics = evaluate(
        model, DataLoader(val, batch_size=2, collate_fn=collate), val.coco, val.label_to_category
    )
    assert metrics == pytest.approx(runs[0]["metrics"], abs=1e-6)
