"""Fault injection: `zoo train` SIGKILLed at a random step (seeded) or in the middle of a
checkpoint write, then resumed, ends with the same weights, bit for bit, and the same
per-step losses as an uninterrupted run. (A truncated checkpoint and a full disk:
tests/test_train_resume.py.)"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.runs import kill_when, train_steps
from support.shapes import SHAPES_MODEL, shapes_data

from zoo.training import read_metrics
from zoo.training.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261130  # draws the step of the kill; printed on failure

pytestmark = pytest.mark.slow  # three training subprocesses: ~1-2 minutes on 2 cores


def _command(data: Path, out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "zoo", "train", "--model", "ddetr", "--data", str(data)]
    cmd += ["--out", str(out), "--epochs", "2", "--lr-drop", "1", "--workers", "0"]
    cmd += ["--eval-every", "0", "--image-size", "64", "--no-progress", "--seed", "3"]
    cmd += ["--checkpoint-every", "2", *extra, "--overrides"]
    return cmd + [f"{k}={v}" for k, v in SHAPES_MODEL.items() if k != "num_classes"]


def _train(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("faults")
    data = shapes_data(root / "data", num_train=8, num_val=2)
    _train(_command(data, root / "straight"))
    return data, root / "straight"


@pytest.mark.parametrize("fault", ["after a random step", "while writing a checkpoint"])
def test_killed_run_resumes_to_the_same_weights(
    tmp_path: Path, straight: tuple[Path, Path], fault: str
) -> None:
    data, straight_out = straight
    out = tmp_path / "run"
    if fault == "after a random step":
        step = random.Random(SEED).randint(2, 7)  # a checkpoint exists from step 2 on
        kill_when(_command(data, out), lambda: train_steps(out) >= step)
    else:
        step = 4
        checkpoints = out / "checkpoints"
        kill_when(
            _command(data, out),
            lambda: checkpoints.is_dir() and any(checkpoints.glob(".tmp-step-0000000[46]-*")),
        )
    killed_at = train_steps(out)
    assert 0 < killed_at < 8, (fault, step, killed_at)
    assert (out / ".lock").is_file()  # left by the killed run: must not block the resume
    _train(_command(data, out, "--resume", str(out)))

    records = read_metrics(out / "metrics.jsonl", "train")
    assert [r["step"] for r in records] == list(range(1, 9)), (fault, step, killed_at)
    expected = {r["step"]: r["loss"] for r in read_metrics(straight_out / "metrics.jsonl", "train")}
    for r in records:
        assert r["loss"] == pytest.approx(expected[r["step"]], rel=1e-6, abs=1e-7), r["step"]
    want, got = load_model(straight_out).state_dict(), load_model(out).state_dict()
    assert want.keys() == got.keys()
    for key, value in want.items():
        assert torch.equal(value, got[key]), (key, fault, step, killed_at)
