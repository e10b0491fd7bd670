"""Checkpoints verified on load: a damaged one is skipped with a warning and kept, pruning
counts only intact ones, a failed write (full disk) leaves the previous one usable, and
a resumed run's metrics hold each step once."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from support.shapes import shapes_model

from zoo.cli.args import local_or_hub
from zoo.training import checkpoint as ckpt
from zoo.training import load_model, read_metrics, resolve_checkpoint
from zoo.training.log import MetricsLog
from zoo.training.manifest import CheckpointError, CheckpointNotFoundError
from zoo.weights import zoo_format


def _save(root: Path, steps: list[int], keep: int = 10) -> dict[int, dict[str, torch.Tensor]]:
    """Checkpoints at ``steps``, each of a model with different weights; their state dicts."""
    saved = {}
    model = shapes_model()
    for step in steps:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * step)
        ckpt.save_checkpoint(root, step, model, {"step": step}, keep=keep)
        saved[step] = {k: v.clone() for k, v in model.state_dict().items()}
    return saved


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("step-"))


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "delete"])
def test_damaged_latest_falls_back_to_the_newest_intact(tmp_path: Path, damage: str) -> None:
    saved = _save(tmp_path, [2, 4, 6])
    weights = tmp_path / "step-00000006" / "model.safetensors"
    if damage == "truncate":
        _truncate(weights)
    elif damage == "flip a byte":  # same size: only the checksum can tell
        data = bytearray(weights.read_bytes())
        data[-10] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    with pytest.warns(UserWarning, match=r"step-00000006 is damaged: .*model\.safetensors") as w:
        assert resolve_checkpoint(tmp_path) == tmp_path / "step-00000004"
    assert "left in place" in str(w[0].message)
    with pytest.warns(UserWarning, match="step-00000006"):
        assert _same(load_model(tmp_path), saved[4])
    assert _names(tmp_path) == ["step-00000002", "step-00000004", "step-00000006"]
    # Named directly, a damaged checkpoint is an error, not a silent substitute.
    with pytest.raises(CheckpointError, match="step-00000006 is damaged"):
        resolve_checkpoint(tmp_path / "step-00000006")


def test_no_intact_checkpoint_names_every_problem(tmp_path: Path) -> None:
    _save(tmp_path, [1, 2])
    _truncate(tmp_path / "step-00000001" / "state.pt")
    (tmp_path / "step-00000002" / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(tmp_path)
    message = str(info.value)
    assert "step-00000002 is damaged" in message and "manifest.json is unreadable" in message
    assert "step-00000001 is damaged" in message and "state.pt is" in message


def test_latest_naming_a_missing_folder_says_so(tmp_path: Path) -> None:
    saved = _save(tmp_path, [3])
    (tmp_path / "latest").write_text("step-00000009")
    with pytest.warns(UserWarning, match="latest names 'step-00000009', which is not a checkpoint"):
        assert _same(load_model(tmp_path), saved[3])
    ckpt.shutil.rmtree(tmp_path / "step-00000003")
    with pytest.raises(CheckpointError, match="latest names 'step-00000009'"):
        resolve_checkpoint(tmp_path)


def test_missing_paths_are_not_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no-such-run: no such file or directory"):
        resolve_checkpoint(tmp_path / "no-such-run")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for typo in ["runs/nonexistent", "./x", "/no/such/dir", "a/b/c", "weights.pth"]:
        with pytest.raises(FileNotFoundError, match="no such file or directory"):
            local_or_hub(typo)
    assert local_or_hub("SenseTime/deformable-detr") == "SenseTime/deformable-detr"
    assert local_or_hub("ddetr") == "ddetr"
    _save(tmp_path / "runs" / "x" / "checkpoints", [1])
    assert local_or_hub("runs/x") == Path("runs/x/checkpoints/step-00000001")


def test_pruning_keeps_the_newest_intact_and_every_damaged(tmp_path: Path) -> None:
    _save(tmp_path, [1, 2], keep=2)
    _truncate(tmp_path / "step-00000002" / "model.safetensors")
    _save(tmp_path, [3], keep=2)  # intact: 1 and 3, both kept; 2 is damaged, kept
    assert _names(tmp_path) == ["step-00000001", "step-00000002", "step-00000003"]
    _save(tmp_path, [4], keep=2)
    assert _names(tmp_path) == ["step-00000002", "step-00000003", "step-00000004"]
    _save(tmp_path, [5], keep=1)
    assert _names(tmp_path) == ["step-00000002", "step-00000005"]


def test_checkpoints_without_a_manifest_still_load(tmp_path: Path) -> None:
    saved = _save(tmp_path, [1])  # as written before manifests existed
    (tmp_path / "step-00000001" / "manifest.json").unlink()
    assert _same(load_model(tmp_path), saved[1])


def test_full_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = _save(tmp_path, [1])
    real_save_file = zoo_format.save_file

    def full_disk(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        real_save_file(tensors, filename, metadata=metadata)
        _truncate(Path(filename))  # the disk filled up half-way
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(zoo_format, "save_file", full_disk)
    with pytest.raises(CheckpointError) as info:
        _save(tmp_path, [2])
    message = str(info.value)
    assert "could not write checkpoint" in message and "step-00000002" in message
    assert "the disk is full" in message
    assert f"previous checkpoint {tmp_path / 'step-00000001'} is intact" in message
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000001"]
    assert _same(load_model(tmp_path), saved[1])


def test_resumed_metrics_drop_the_steps_after_the_checkpoint(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, 6):
        log.write("train", epoch=0, step=step, loss=float(step))
    log.write("eval", epoch=1, step=4, AP=0.5)
    log.write("note", text="no step")
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"event": "train", "step": 6, "lo')  # a line cut short by a kill
    log.truncate_after(3)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["event"], r.get("step")) for r in records] == [
        ("train", 1),
        ("train", 2),
        ("train", 3),
        ("note", None),
    ]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["loss"] == 1.0


def test_a_damaged_checkpoint_saved_again_is_set_aside(tmp_path: Path) -> None:
    """A resumed run that saves the step of a damaged checkpoint again keeps the damaged
    files (as step-N.damaged, which nothing loads) instead of deleting them."""
    _save(tmp_path, [1, 2])
    _truncate(tmp_path / "step-00000002" / "state.pt")
    damaged = (tmp_path / "step-00000002" / "state.pt").read_bytes()
    with pytest.warns(UserWarning, match=r"step-00000002\.damaged \(.*state\.pt is"):
        saved = _save(tmp_path, [2])
    assert (tmp_path / "step-00000002.damaged" / "state.pt").read_bytes() == damaged
    assert resolve_checkpoint(tmp_path) == tmp_path / "step-00000002"
    assert _same(load_model(tmp_path), saved[2])
