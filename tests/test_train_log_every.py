"""``log_every``: the losses are read on the host every N steps, as their mean since the
last record, and a non-finite loss still stops the run at the next record."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from support.shapes import shapes_data, shapes_model, shapes_sets

import zoo
from zoo.training import TrainConfig, Trainer, read_metrics

# 8 images, batch 2: 4 steps per epoch, 2 epochs.
CONFIG = TrainConfig(epochs=2, batch_size=2, num_workers=0, eval_every=0, progress=False, seed=5)


def _records(out: Path, data: Path, config: TrainConfig, criterion: Any = None) -> list[dict]:
    train, _ = shapes_sets(data)
    model = shapes_model()
    criterion = criterion or zoo.build_criterion(model.config)
    Trainer(model, criterion, train, config, out).fit()
    return read_metrics(out / "metrics.jsonl", "train")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shapes_data(tmp_path_factory.mktemp("log_every") / "data")


@pytest.mark.slow  # two 8-step runs
def test_records_hold_the_mean_since_the_last_one(tmp_path: Path, data: Path) -> None:
    every = {r["step"]: r for r in _records(tmp_path / "every", data, CONFIG)}
    assert sorted(every) == list(range(1, 9))
    sparse = _records(tmp_path / "sparse", data, replace(CONFIG, log_every=3))
    # At multiples of 3 of the run's step count, and at each epoch's end (steps 4 and 8).
    assert [r["step"] for r in sparse] == [3, 4, 6, 8]
    spans = {3: [1, 2, 3], 4: [4], 6: [5, 6], 8: [7, 8]}
    for record in sparse:
        for key in ("loss", "loss_ce", "loss_bbox_0", "loss_giou"):
            expected = sum(every[s][key] for s in spans[record["step"]]) / len(
                spans[record["step"]]
            )
            assert record[key] == pytest.approx(expected, rel=1e-5), (record["step"], key)
        assert record["epoch"] == every[record["step"]]["epoch"]


def test_a_non_finite_loss_stops_the_run_at_the_next_record(tmp_path: Path, data: Path) -> None:
    model = shapes_model()
    criterion = zoo.build_criterion(model.config)
    calls = []

    def poisoned(outputs: dict, targets: list) -> dict[str, torch.Tensor]:
        losses = criterion(outputs, targets)
        calls.append(1)
        if len(calls) == 2:
            # A NaN value with finite gradients: the weights stay finite, so only the
            # loss record can tell.
            losses["loss"] = losses["loss"] + float("nan")
        return losses

    with pytest.raises(FloatingPointError, match="one of steps 1-3"):
        _records(tmp_path, data, replace(CONFIG, log_every=3), poisoned)
    assert len(calls) == 3  # found at the record, not at the step


def test_the_interval_is_checked() -> None:
    with pytest.raises(ValueError, match=r"TrainConfig\.log_every must be >= 1, got 0"):
        TrainConfig(log_every=0)
    with pytest.raises(ValueError, match=r"TrainConfig\.size_bucket must be >= 0, got -32"):
        TrainConfig(size_bucket=-32)
