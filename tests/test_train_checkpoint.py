"""Checkpoints: an interrupted write keeps the previous one; fine-tuning; RNG round trip; AMP."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from support.shapes import shapes_data, shapes_model, shapes_sets

import zoo
from zoo.training import TrainConfig, Trainer, load_model, resolve_checkpoint
from zoo.training import checkpoint as ckpt

CONFIG = TrainConfig(
    epochs=1, batch_size=2, num_workers=0, eval_every=0, progress=False, max_steps=2
)


def test_interrupted_write_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = shapes_model()
    good = ckpt.save_checkpoint(tmp_path, 1, model, {"step": 1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def crash(obj: object, path: object) -> None:
        Path(str(path)).write_bytes(b"half a file")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 2, model, {"step": 2})
    monkeypatch.undo()
    assert resolve_checkpoint(tmp_path) == good
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [
        good.name
    ]  # no half-written folder
    restored = load_model(tmp_path)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in before.items())
    assert ckpt.load_state(tmp_path) == {"step": 1}


def test_killed_write_leftovers_are_ignored_then_cleaned(tmp_path: Path) -> None:
    model = shapes_model()
    ckpt.save_checkpoint(tmp_path, 1, model, {"step": 1})
    leftover = tmp_path / ".tmp-step-00000002-999999"  # as left by a killed process
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"garbage")
    assert resolve_checkpoint(tmp_path).name == "step-00000001"
    ckpt.save_checkpoint(tmp_path, 3, model, {"step": 3}, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000003"]


def test_rng_round_trip_through_weights_only_load(tmp_path: Path) -> None:
    state = ckpt.capture_rng()
    torch.save({"rng": state}, tmp_path / "s.pt")
    # The legacy global numpy generator is what a checkpoint saves.
    expected = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    ckpt.restore_rng(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]  # noqa: NPY002
    assert torch.equal(torch.rand(3), expected[2])


def test_fine_tune_with_other_num_classes(tmp_path: Path) -> None:
    model = shapes_model()
    ckpt.save_checkpoint(tmp_path, 1, model, {})
    tuned = load_model(tmp_path, num_classes=2)
    assert tuned.config.num_classes == 2
    report = tuned.load_report
    assert report.reinitialized and all("class_embed" in k for k in report.reinitialized)
    assert report.ok
    source = model.state_dict()
    kept = [k for k, v in tuned.state_dict().items() if "class_embed" not in k]
    assert all(torch.equal(tuned.state_dict()[k], source[k]) for k in kept)


# bf16 runs in the CLI test (a subprocess): see tests/test_train_cli.py. Full precision
# runs too, so that the scaler check below tells the two apart.
@pytest.mark.parametrize("amp", [None, "fp16"])
# The fp16 scaler skips its first steps while it finds a scale that does not overflow.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_mixed_precision_steps(tmp_path: Path, amp: str | None) -> None:
    data = shapes_data(tmp_path / "data", num_train=4, num_val=2)
    train, val = shapes_sets(data)
    model = shapes_model()
    config = TrainConfig(
        epochs=1, batch_size=2, num_workers=0, progress=False, amp=amp, eval_every=1
    )
    trainer = Trainer(
        model, zoo.build_criterion(model.config), train, config, tmp_path / "out", val
    )
    metrics = trainer.fit()
    assert trainer.step == 2
    assert metrics is not None and set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert trainer.scaler.is_enabled() == (amp == "fp16")
