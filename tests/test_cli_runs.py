"""``zoo train`` as a user runs it: a startup summary, ``--resume RUN_DIR`` continuing in
that folder; then ``zoo detect --model RUN_DIR`` and ``zoo plot RUN_DIR`` on the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from support.shapes import SHAPES_MODEL, shapes_data

from zoo.cli import main
from zoo.curves import have_matplotlib, read_records, smooth
from zoo.training.checkpoint import load_model


def test_smooth_by_hand() -> None:
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    with pytest.raises(ValueError, match="window"):
        smooth([1.0], 0)


def test_train_resume_detect_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = shapes_data(tmp_path / "data", num_train=4, num_val=2)
    run = tmp_path / "run"
    overrides = [f"{k}={v}" for k, v in SHAPES_MODEL.items() if k != "num_classes"]
    base = ["train", "--model", "ddetr", "--data", str(data), "--image-size", "64"]
    base += ["--workers", "0", "--batch-size", "2", "--no-progress", "--overrides", *overrides]
    assert main([*base, "--out", str(run), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "model: ddetr (DeformableDETR" in out
    assert "data: " in out and "(4 train images, 2 val images)" in out
    assert "steps: 2 (2 per epoch x 1 epochs, batch 2 x 1 processes)" in out
    assert "device: cpu" in out and f"output: {run}" in out

    # Resume without --out: the same folder, from step 2, one more epoch.
    assert main([*base, "--resume", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"resuming from step 2 (epoch 2) of {run / 'checkpoints'}" in out
    assert json.loads(out.strip().splitlines()[-1])["step"] == 4
    records = read_records(run / "metrics.jsonl")
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2] and evals[-1]["step"] == 4

    # zoo detect takes the run folder (its latest checkpoint), as zoo eval does.
    image = sorted((data / "val").glob("*.png"))[0]
    found = tmp_path / "found"
    assert (
        main(["detect", str(image), "--model", str(run), "--out", str(found), "--threshold", "0"])
        == 0
    )
    record = json.loads((found / f"{image.stem}.json").read_text())
    (expected,) = load_model(run).predict([Image.open(image).convert("RGB")], threshold=0.0)
    assert len(record["detections"]) == len(expected["scores"]) > 0

    if have_matplotlib():
        assert main(["plot", str(run)]) == 0
        with Image.open(run / "curves.png") as png:
            assert png.width > 500 and png.height > 300
