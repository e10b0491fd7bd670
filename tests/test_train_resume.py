"""Training resumes exactly: straight run == stopped + resumed run, step by step, also after
a damaged checkpoint or a full disk."""

from __future__ import annotations

import errno
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.shapes import shapes_data, shapes_model, shapes_sets

import zoo
import zoo.training.checkpoint
from zoo.training import TrainConfig, Trainer, read_metrics, resolve_checkpoint
from zoo.training import checkpoint as ckpt
from zoo.training.manifest import CheckpointError
from zoo.training.optim import param_groups

# 8 images, batch 2: 4 steps per epoch; 2 epochs with a learning-rate drop in between.
CONFIG = TrainConfig(
    epochs=2, batch_size=2, lr_drop=1, num_workers=0, eval_every=0, progress=False, seed=3
)


def _run(out: Path, data: Path, config: TrainConfig, resume: Path | None = None) -> Trainer:
    train, _ = shapes_sets(data)
    model = shapes_model()
    trainer = Trainer(model, zoo.build_criterion(model.config), train, config, out)
    if resume is not None:
        trainer.resume(resume)
    trainer.fit()
    return trainer


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl", "train")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Trainer]:
    """The data and one uninterrupted run, shared by the resumed runs."""
    root = tmp_path_factory.mktemp("resume")
    data = shapes_data(root / "data")
    return data, root / "a", _run(root / "a", data, CONFIG)


@pytest.mark.parametrize("stop", [3, 4])  # mid-epoch, and at the epoch boundary
def test_resume_continues_exactly(
    tmp_path: Path, straight: tuple[Path, Path, Trainer], stop: int
) -> None:
    data, straight_out, straight_run = straight
    _run(tmp_path, data, replace(CONFIG, max_steps=stop))
    assert sorted(_losses(tmp_path)) == list(range(1, stop + 1))
    resumed = _run(tmp_path, data, CONFIG, resume=tmp_path)
    a, b = _losses(straight_out), _losses(tmp_path)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert len(set(a.values())) == len(a)  # the steps really differ
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-7), step
    for (name, x), y in zip(
        straight_run.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
    # The final checkpoint holds the same weights; the rate dropped after each epoch.
    saved = load_file(str(resolve_checkpoint(tmp_path) / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in resumed.model.state_dict().items())
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(CONFIG.lr * CONFIG.lr_gamma**2)
    assert resumed.step == 8 and resumed.epoch == 2


def test_param_groups_follow_the_recipe() -> None:
    model = shapes_model()
    groups = {g["name"]: g for g in param_groups(model, CONFIG)}
    assert groups["main"]["lr"] == 2e-4
    assert groups["backbone"]["lr"] == 2e-5
    assert groups["slow"]["lr"] == pytest.approx(2e-5)
    named = {id(p): n for n, p in model.named_parameters()}
    slow = [named[id(p)] for p in groups["slow"]["params"]]
    assert slow and all("sampling_offsets" in n or "reference_points" in n for n in slow)
    assert all(named[id(p)].startswith("backbone.") for p in groups["backbone"]["params"])
    trainable = sum(p.requires_grad for p in model.parameters())
    assert sum(len(g["params"]) for g in groups.values()) == trainable


@pytest.mark.filterwarnings("ignore")  # the events do not depend on the warning filters
def test_resume_skips_a_truncated_checkpoint(
    tmp_path: Path, straight: tuple[Path, Path, Trainer], capsys: pytest.CaptureFixture[str]
) -> None:
    """The newest checkpoint cut short (a copy interrupted, a full disk): resume says so
    (printed and logged), falls back to the one before, logs the lost step again, and
    ends where a straight run ends."""
    data, straight_out, straight_run = straight
    _run(tmp_path, data, replace(CONFIG, max_steps=5, checkpoint_every=2))
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00000004", "step-00000005"]
    weights = checkpoints / "step-00000005" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    capsys.readouterr()
    resumed = _run(tmp_path, data, CONFIG, resume=tmp_path)
    printed = capsys.readouterr().out.splitlines()
    damaged = r"checkpoint step-00000005 is damaged: .*model\.safetensors is \d+ bytes"
    assert re.fullmatch(f"skipped: {damaged}.* \\(left in place\\)", printed[0]), printed
    assert printed[1] == f"resuming from step 4 (epoch 2) of {checkpoints / 'step-00000004'}"
    (skipped,) = read_metrics(tmp_path / "metrics.jsonl", "skipped")
    assert re.match(damaged, skipped["message"].removeprefix("skipped: "))
    (event,) = read_metrics(tmp_path / "metrics.jsonl", "resume")
    assert event["step"] == 4 and event["checkpoint"] == str(checkpoints / "step-00000004")
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")]
    assert steps == list(range(1, 9))  # step 5 once, though the first run logged it too
    a, b = _losses(straight_out), _losses(tmp_path)
    assert all(a[s] == pytest.approx(b[s], rel=1e-6, abs=1e-7) for s in a)
    for (name, x), y in zip(
        straight_run.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
    assert (checkpoints / "step-00000005").is_dir()  # the damaged one is kept


def test_a_full_disk_stops_the_run_and_keeps_the_last_checkpoint(
    tmp_path: Path, straight: tuple[Path, Path, Trainer], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _, _ = straight
    real_save = ckpt.torch.save
    saves = []

    def filling_disk(obj: object, path: object) -> None:
        saves.append(path)
        if len(saves) > 1:  # the second checkpoint does not fit
            Path(str(path)).write_bytes(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(obj, path)

    monkeypatch.setattr(ckpt.torch, "save", filling_disk)
    with pytest.raises(CheckpointError, match="step-00000004 \\(the disk is full\\)") as info:
        _run(tmp_path, data, replace(CONFIG, checkpoint_every=2))
    assert "previous checkpoint" in str(info.value) and "step-00000002 is intact" in str(info.value)
    monkeypatch.undo()
    assert resolve_checkpoint(tmp_path).name == "step-00000002"
    assert zoo.training.checkpoint.load_state(tmp_path)["step"] == 2
    # The folder is free again, and the run resumes from the kept checkpoint.
    resumed = _run(tmp_path, data, CONFIG, resume=tmp_path)
    assert resumed.step == 8
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")] == list(
        range(1, 9)
    )
