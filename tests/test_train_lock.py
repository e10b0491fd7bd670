"""One run per output folder: a second run is refused with the first one's pid and start
time; a lock file left by a dead process does not block; DDP ranks stop together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from support.shapes import shapes_data, shapes_model, shapes_sets

import zoo
from zoo.training import TrainConfig, Trainer
from zoo.training.lock import RunLock, RunLockedError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(epochs=1, batch_size=2, num_workers=0, eval_every=0, progress=False)


def _trainer(data: Path, out: Path) -> Trainer:
    train, _ = shapes_sets(data)
    model = shapes_model()
    return Trainer(model, zoo.build_criterion(model.config), train, CONFIG, out)


def test_a_second_lock_is_refused_with_the_holder(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        info = json.loads((tmp_path / ".lock").read_text())
        assert info["pid"] == os.getpid()
        with pytest.raises(RunLockedError) as refused:
            RunLock(tmp_path).acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()} on host {info['host']}, started {info['started']}" in message
        assert str(tmp_path) in message and "choose another output folder" in message
        # The refused try left the holder's description in place.
        assert json.loads((tmp_path / ".lock").read_text()) == info
    RunLock(tmp_path).acquire().release()  # free again


def test_a_dead_runs_lock_file_does_not_block(tmp_path: Path) -> None:
    # What a SIGKILLed run leaves: the file with its description, no lock held.
    (tmp_path / ".lock").write_text(json.dumps({"pid": 2**22 + 1, "host": "h", "started": "x"}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_trainers_on_one_folder(tmp_path: Path) -> None:
    data = shapes_data(tmp_path / "data", num_train=2, num_val=1)
    first = _trainer(data, tmp_path / "run")
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()} "):
        _trainer(data, tmp_path / "run")
    first.fit()  # releases the folder when done
    second = _trainer(data, tmp_path / "run")
    second.close()


def test_zoo_train_refuses_a_folder_in_use(tmp_path: Path) -> None:
    data = shapes_data(tmp_path / "data", num_train=2, num_val=1)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "zoo", "train", "--model", "ddetr", "--data", str(data)]
    cmd += ["--out", str(out), "--epochs", "1", "--workers", "0", "--eval-every", "0"]
    cmd += ["--image-size", "64", "--no-progress", "--overrides", "depth=18", "hidden_dim=32"]
    with RunLock(out):
        started = json.loads((out / ".lock").read_text())["started"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"pid {os.getpid()}" in done.stderr and started in done.stderr
    assert not (out / "metrics.jsonl").exists()  # it wrote nothing


def _rank(rank: int, data: Path, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{out.parent / 'rendezvous'}", rank=rank, world_size=2
    )
    try:
        _trainer(data, out)
        outcome = "trained"
    except RunLockedError as e:
        outcome = str(e)
    finally:
        dist.destroy_process_group()
    (out.parent / f"rank{rank}.txt").write_text(outcome)


def test_ddp_ranks_are_all_refused(tmp_path: Path) -> None:
    data = shapes_data(tmp_path / "data", num_train=4, num_val=1)
    out = tmp_path / "run"
    with RunLock(out):
        context = mp.spawn(_rank, args=(data, out), nprocs=2, join=False)
        joined = False
        for _ in range(60):  # a deadlocked rank would wait forever
            if context.join(timeout=2):
                joined = True
                break
        if not joined:
            for p in context.processes:
                p.kill()
    assert joined, "the ranks did not finish"
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert all(f"pid {os.getpid()}" in o for o in outcomes), outcomes
