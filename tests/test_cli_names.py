"""Every name zoo.load takes works as ``zoo train --model``/``--init`` and ``zoo eval
--model``; ``zoo eval`` says what it evaluated, prints pycocotools' summary without its
progress lines, and marks an empty area range "n/a (no large objects)"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.shapes import shapes_data

import zoo
from zoo.cli import build_parser, main
from zoo.training.checkpoint import load_model


def test_train_and_eval_take_the_bundled_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shapes_data(tmp_path / "data", num_train=2, num_val=2)  # 64 px: no large object
    run = tmp_path / "run"
    argv = ["train", "--model", "shapes-demo", "--data", str(data), "--out", str(run)]
    argv += ["--image-size", "64", "--workers", "0", "--eval-every", "0", "--no-progress"]
    assert main([*argv, "--max-steps", "1", "--lr", "1e-12", "--lr-backbone", "0"]) == 0
    demo, trained = zoo.load("shapes-demo"), load_model(run)
    # Fine-tuned from the bundled weights (its architecture; a rate too small to move them).
    assert trained.config.two_stage and trained.config == demo.config.__class__(
        **{**demo.config.__dict__, "image_size": 64}
    )
    for key, value in demo.state_dict().items():
        assert torch.allclose(trained.state_dict()[key], value, atol=1e-6), key
    capsys.readouterr()

    assert main(["eval", "--model", str(run), "--data", str(data), "--workers", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    checkpoint = run / "checkpoints" / "step-00000001"
    assert lines[0] == (
        f"evaluating {checkpoint} (checkpoint at step 1) (DeformableDETR, 5 classes) on "
        f"{data} split val: 2 images, image size 64"
    )
    table = lines[1:-1]
    assert len(table) == 12 and all(line.startswith(" Average ") for line in table)
    assert table[5].endswith("| area= large | maxDets=100 ] = n/a (no large objects)")
    assert table[11].endswith("| area= large | maxDets=100 ] = n/a (no large objects)")
    assert table[0].endswith(" = " + f"{json.loads(lines[-1])['AP']:.3f}")
    metrics = json.loads(lines[-1])
    assert metrics["APl"] == -1.0 and 0.0 <= metrics["AP"] <= 1.0

    assert main(["eval", "--model", "shapes-demo", "--data", str(data), "--workers", "0"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("evaluating shapes-demo (bundled: ")
    assert first.endswith(
        f"(DeformableDETR, 5 classes) on {data} split val: 2 images, image size 128"
    )


def test_init_and_model_help_name_what_they_take() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = " ".join(sub.choices["train"].format_help().split())
    assert "--init INIT fine-tune from weights: anything zoo.load takes" in text
    assert "the bundled shapes-demo" in text
    assert "also checkpoint every N steps, besides the checkpoint at each epoch's end" in text
