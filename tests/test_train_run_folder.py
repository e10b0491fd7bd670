"""A run folder holds one run: ``zoo train --resume RUN`` alone continues it with its own
model, data and options (a changed option is refused by name, unless it may change); a new
run into a used folder is refused (``--overwrite`` moves the old one aside); a checkpoint
resumes only into its own run's folder; a state the safe loader refuses is one line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.runs import ROOT, kill_when, train_steps
from support.shapes import SHAPES_MODEL, shapes_data, shapes_model, shapes_sets

import zoo
from zoo.cli import main
from zoo.training import TrainConfig, Trainer, read_metrics
from zoo.training.checkpoint import load_model, resolve_checkpoint
from zoo.training.manifest import write_manifest
from zoo.training.run import RunFolderInUseError

OVERRIDES = [f"{k}={v}" for k, v in SHAPES_MODEL.items() if k != "num_classes"]
# Options that differ from every default, so that a resume using a default shows.
OPTIONS = ["--batch-size", "1", "--image-size", "48", "--lr", "3e-4", "--lr-drop", "1"]
OPTIONS += ["--seed", "5", "--eval-every", "0", "--workers", "0", "--no-progress"]


def _train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "ddetr", "--data", str(data), "--out", str(out), *OPTIONS,
            *extra, "--overrides", *OVERRIDES]  # fmt: skip


@pytest.mark.slow  # three training runs, two in subprocesses: ~1-2 minutes on 2 cores
def test_resume_alone_restores_the_run_after_a_kill_and_a_damaged_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shapes_data(tmp_path / "data", num_train=4, num_val=1)
    # 4 steps per epoch (batch 1), 2 epochs; --checkpoint-every 3: steps 3 and 6 besides
    # the epoch ends 4 and 8, as its help says.
    extra = ["--epochs", "2", "--checkpoint-every", "3", "--keep-checkpoints", "9"]
    straight = tmp_path / "straight"
    assert main(_train_argv(data, straight, *extra)) == 0
    names = sorted(p.name for p in (straight / "checkpoints").glob("step-*"))
    assert names == [f"step-0000000{s}" for s in (3, 4, 6, 8)]

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "zoo", *_train_argv(data, run, *extra)]
    kill_when(cmd, lambda: train_steps(run) >= 5)  # a checkpoint at 4 (maybe at 6) by then
    checkpoints = run / "checkpoints"
    latest = resolve_checkpoint(run)
    assert latest.name in ("step-00000004", "step-00000006")
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # damaged: resume must fall back

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # the events show all the same
    cmd = [sys.executable, "-m", "zoo", "train", "--resume", str(run)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    # The run's own options, not the command line's defaults (batch 2, size 800).
    assert "batch 1 x 1 processes" in done.stdout and "image size 48" in done.stdout
    fallback = "step-00000003" if latest.name == "step-00000004" else "step-00000004"
    skipped = [line for line in lines if line.startswith("skipped: ")]
    assert len(skipped) == 1 and f"checkpoint {latest.name} is damaged: " in skipped[0]
    resumed_at = int(fallback[-1])
    assert f"resuming from step {resumed_at} " in done.stdout
    assert str(checkpoints / fallback) in done.stdout
    events = {r["event"]: r for r in read_metrics(run / "metrics.jsonl") if "message" in r}
    assert events["skipped"]["message"] == skipped[0]
    assert events["resume"]["step"] == resumed_at
    # Saving the damaged step again set the damaged folder aside, and said so.
    aside = f"damaged checkpoint moved to {checkpoints / latest.name}.damaged ("
    assert events["set_aside"]["message"].startswith(aside)
    assert any(line.startswith(aside) for line in lines)

    # Bit for bit the uninterrupted run, every step's loss logged once.
    records = read_metrics(run / "metrics.jsonl", "train")
    assert [r["step"] for r in records] == list(range(1, 9))
    expected = {r["step"]: r["loss"] for r in read_metrics(straight / "metrics.jsonl", "train")}
    assert all(r["loss"] == pytest.approx(expected[r["step"]], rel=1e-6) for r in records)
    want, got = load_model(straight).state_dict(), load_model(run).state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(value, got[key]) for key, value in want.items())
    # One run id from start to end: the folder's, the checkpoints', the log's.
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    starts = read_metrics(run / "metrics.jsonl", "start")
    assert [r["run_id"] for r in starts] == [run_id] and events["resume"]["run_id"] == run_id


@pytest.fixture(scope="module")
def one_step(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The data and a run of two steps, one epoch (the options of OPTIONS, --max-steps 2)."""
    root = tmp_path_factory.mktemp("runs")
    data = shapes_data(root / "data", num_train=2, num_val=1)
    assert main(_train_argv(data, root / "run", "--epochs", "3", "--max-steps", "2")) == 0
    return data, root / "run"


@pytest.fixture
def run_copy(one_step: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """The data and a copy of :func:`one_step`'s run in ``tmp_path / "run"``, free to change."""
    data, original = one_step
    run = tmp_path / "run"
    shutil.copytree(original, run)
    return data, run


CHANGED = [
    (["--batch-size", "2"], "--batch-size: 2 differs from the resumed run's 1"),
    (["--image-size", "64"], "--image-size: 64 differs from the resumed run's 48"),
    (["--lr", "2e-4"], "--lr: 0.0002 differs from the resumed run's 0.0003"),
    (["--seed", "42"], "--seed: 42 differs from the resumed run's 5"),
    (["--amp", "bf16"], "--amp: bf16 differs from the resumed run's None"),
    (["--model", "ddetr-refine"], "--model: ddetr-refine differs from the resumed run's ddetr"),
    (["--overrides", "hidden_dim=64"], "--overrides: hidden_dim=64 differs from the resumed"),
    (["--max-steps", "1"], "--max-steps: 1 is not beyond the checkpoint it resumes, at step 2"),
    (["--epochs", "1"], "--epochs: 1 is not beyond the checkpoint it resumes, at step 2 after 1"),
]


@pytest.mark.parametrize(("extra", "message"), CHANGED, ids=[c[0][0] for c in CHANGED])
def test_a_changed_option_is_refused_by_name(
    one_step: tuple[Path, Path],
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, run = one_step
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), *extra])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"zoo train: error: argument {message}"), error
    assert (run / "metrics.jsonl").read_text() == before  # nothing ran


def test_options_that_may_change_are_accepted_and_reported(
    run_copy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, run = run_copy
    # The same values given again (another spelling of the data path included) are fine.
    same = ["--batch-size", "1", "--data", str(data / ".." / "data"), "--overrides", *OVERRIDES]
    argv = ["train", "--resume", str(run), *same, "--max-steps", "3", "--workers", "0"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "resumed with --max-steps 3 (the run had 2)" in out
    assert json.loads(out.strip().splitlines()[-1])["step"] == 3
    (event,) = read_metrics(run / "metrics.jsonl", "resume_option")
    assert event["message"] == "resumed with --max-steps 3 (the run had 2)"
    # The next resume starts from the changed options.
    assert json.loads((run / "run.json").read_text())["options"]["max_steps"] == 3


def test_a_used_folder_is_refused_and_overwrite_moves_it_aside(
    run_copy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, run = run_copy
    old_id = json.loads((run / "run.json").read_text())["run_id"]
    before = (run / "metrics.jsonl").read_text()
    argv = _train_argv(data, run, "--max-steps", "1")
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error == (
        f"zoo train: RunFolderInUseError: {run} already holds run {old_id} (run.json, "
        f"metrics.jsonl, checkpoints/): continue it with --resume {run}, start the new run in "
        f"another --out folder, or pass --overwrite to move the old run aside to "
        f"{run}.replaced-<time> (--debug: traceback)"
    )
    assert (run / "metrics.jsonl").read_text() == before

    assert main([*argv, "--overwrite"]) == 0
    (aside,) = tmp_path.glob("run.replaced-*")
    assert json.loads((aside / "run.json").read_text())["run_id"] == old_id
    assert (aside / "metrics.jsonl").read_text() == before
    new_id = json.loads((run / "run.json").read_text())["run_id"]
    assert new_id != old_id
    assert [r["run_id"] for r in read_metrics(run / "metrics.jsonl", "start")] == [new_id]
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl", "train")] == [1]

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), "--overwrite"])
    assert exit_info.value.code == 2


def test_a_checkpoint_resumes_only_into_its_own_run(
    one_step: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = one_step
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"run_id": "0123456789ab", "options": {}}))
    checkpoint = resolve_checkpoint(run)
    argv = ["train", "--resume", str(checkpoint), "--out", str(other), "--max-steps", "3"]
    assert main(argv) == 1
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    error = capsys.readouterr().err.strip()
    assert f"RunFolderInUseError: checkpoint {checkpoint} belongs to run {run_id}, " in error
    assert f"but {other} holds run 0123456789ab" in error


def test_the_trainer_refuses_a_used_folder(run_copy: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = run_copy
    train, _ = shapes_sets(data)
    model = shapes_model()
    config = TrainConfig(epochs=1, num_workers=0, eval_every=0, progress=False)
    before = (run / "metrics.jsonl").read_text()
    trainer = Trainer(model, zoo.build_criterion(model.config), train, config, run)
    with pytest.raises(RunFolderInUseError, match=f"{run} already holds run "):
        trainer.fit()
    assert trainer.step == 0 and (run / "metrics.jsonl").read_text() == before


def test_a_state_the_safe_loader_refuses_is_one_named_line(
    one_step: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = one_step
    folder = tmp_path / "step-00000001"
    shutil.copytree(resolve_checkpoint(run), folder)
    # An object where the state should hold only tensors and plain containers, with a
    # manifest that matches (a tampered checkpoint, or not one of ours).
    torch.save({"step": 1, "opts": argparse.Namespace(lr=1)}, folder / "state.pt")
    (folder / "manifest.json").unlink()
    write_manifest(folder)
    assert main(["train", "--resume", str(folder)]) == 1
    error = capsys.readouterr().err
    assert error == (
        f"zoo train: CheckpointError: {folder / 'state.pt'} is not a training state the safe "
        "loader accepts (Unsupported global: GLOBAL argparse.Namespace); zoo checkpoints hold "
        "only tensors and plain containers (--debug: traceback)\n"
    )
    assert "weights_only" not in error
