"""Training resumes exactly: straight run == stopped + resumed run, step by step."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.shapes import shapes_data, shapes_model, shapes_sets

import zoo
from zoo.training import TrainConfig, Trainer, read_metrics, resolve_checkpoint
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
