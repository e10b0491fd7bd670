"""The command line: train (in a subprocess, bf16) a tiny model on tiny shapes, then eval,
convert and detect with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from support.shapes import SHAPES_MODEL, shapes_data

import zoo
from zoo.cli import build_parser, main, parse_overrides
from zoo.data.shapes import CLASSES
from zoo.training import read_metrics
from zoo.training.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]


def test_parse_overrides() -> None:
    got = parse_overrides(["hidden_dim=64", "train_backbone=false", "dropout=0.0", "name=x"])
    assert got == {"hidden_dim": 64, "train_backbone": False, "dropout": 0.0, "name": "x"}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["hidden_dim"])


def test_parser_lists_commands() -> None:
    help_text = build_parser().format_help()
    assert all(name in help_text for name in ("train", "eval", "list", "detect", "convert"))


def test_train_then_eval(tmp_path: Path) -> None:
    data = shapes_data(tmp_path / "data", num_train=4, num_val=3)
    out = tmp_path / "run"
    overrides = [f"{k}={v}" for k, v in SHAPES_MODEL.items() if k != "num_classes"]
    env = dict(os.environ)
    # Some virtual machines advertise AMX but fault on it (SIGILL in bf16 matmuls):
    # cap oneDNN at AVX-512 BF16, which changes nothing where AMX works.
    env["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE_BF16"
    cmd = [sys.executable, "-m", "zoo", "train", "--model", "ddetr", "--data", str(data)]
    cmd += ["--out", str(out), "--epochs", "1", "--image-size", "64", "--workers", "0"]
    cmd += ["--amp", "bf16", "--no-progress", "--tensorboard", "--overrides", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2 and set(summary["metrics"]) >= {"AP", "AP50"}
    assert len(read_metrics(out / "metrics.jsonl", "train")) == 2
    assert len(read_metrics(out / "metrics.jsonl", "eval")) == 1
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # The evaluation redrew the run's curves (matplotlib is in the test environment).
    with Image.open(out / "curves.png") as curves:
        assert curves.format == "PNG" and min(curves.size) > 100
    # The trained model knows its classes (the dataset's names) and its input size.
    trained = load_model(out).config
    assert trained.class_names == CLASSES and trained.image_size == 64

    metrics_file = tmp_path / "eval.json"
    argv = ["eval", "--model", str(out), "--data", str(data), "--image-size", "64"]
    argv += ["--workers", "0", "--out", str(metrics_file)]
    assert main(argv) == 0
    metrics = json.loads(metrics_file.read_text())
    assert metrics.keys() == summary["metrics"].keys()

    # The run converts to a model folder with the trained weights ...
    converted = tmp_path / "converted"
    assert main(["convert", str(out), str(converted)]) == 0
    trained_model, model = load_model(out), zoo.load(converted)
    assert model.config == trained_model.config
    for key, value in trained_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # ... and `zoo detect` runs it on an image: the JSON holds predict's detections.
    image = sorted((data / "val").glob("*.png"))[0]
    found = tmp_path / "found"
    argv = ["detect", str(image), "--model", str(converted), "--out", str(found)]
    assert main([*argv, "--threshold", "0.0", "--show-sampling"]) == 0
    record = json.loads((found / f"{image.stem}.json").read_text())
    (expected,) = model.predict([Image.open(image).convert("RGB")], threshold=0.0)
    assert [d["score"] for d in record["detections"]] == expected["scores"].tolist()
    assert [d["box"] for d in record["detections"]] == expected["boxes"].tolist()
    assert {d["name"] for d in record["detections"]} <= set(CLASSES)
    assert (found / f"{image.stem}.png").is_file() and (
        found / f"{image.stem}_sampling.png"
    ).is_file()
