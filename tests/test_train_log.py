"""The metrics log: JSONL always, TensorBoard scalars on request."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from zoo.training import read_metrics
from zoo.training.log import MetricsLog


def test_jsonl_and_tensorboard_scalars(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    log = MetricsLog(tmp_path / "metrics.jsonl", tensorboard_dir=tmp_path / "tb")
    log.write("train", epoch=0, step=1, loss=3.5, lr_main=1e-3)
    log.write("train", epoch=0, step=2, loss=2.5, lr_main=1e-3)
    log.write("eval", epoch=1, step=2, AP=0.25, note="not a number")
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["event"] for r in records] == ["train", "train", "eval"]
    assert records[2]["note"] == "not a number"

    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "train/lr_main", "eval/AP"}
    loss = acc.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(1, 3.5), (2, 2.5)]
    assert [(e.step, pytest.approx(e.value)) for e in acc.Scalars("eval/AP")] == [(2, 0.25)]


def test_tensorboard_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ImportError, match="pip install tensorboard"):
        MetricsLog(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb")
    # Other ranks (enabled=False) never need it.
    MetricsLog(tmp_path / "m.jsonl", enabled=False, tensorboard_dir=tmp_path / "tb")


def test_disabled_log_writes_nothing(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "sub" / "m.jsonl", enabled=False)
    log.write("train", step=1, loss=1.0)
    assert not (tmp_path / "sub").exists()
