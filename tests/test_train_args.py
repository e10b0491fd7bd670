"""`zoo train|eval|shapes` refuse non-positive counts, sizes, epochs, rates at parsing:
exit code 2 and one error line naming the argument, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.cli import main
from zoo.data.shapes import ShapesSpec, generate
from zoo.training import TrainConfig

TRAIN = ["train", "--model", "ddetr", "--data", "DATA"]
EVAL = ["eval", "--model", "ddetr", "--data", "DATA"]

BAD = [
    (["shapes", "OUT", "--num-train", "-5"], "--num-train"),
    (["shapes", "OUT", "--num-train", "0"], "--num-train"),
    (["shapes", "OUT", "--num-val", "-1"], "--num-val"),
    (["shapes", "OUT", "--size", "0"], "--size"),
    (["shapes", "OUT", "--size", "-128"], "--size"),
    (["shapes", "OUT", "--size", "3"], "--size"),  # too small to draw a shape on
    (["shapes", "OUT", "--max-objects", "0"], "--max-objects"),
    (["shapes", "OUT", "--seed", "-1"], "--seed"),
    ([*TRAIN, "--epochs", "0"], "--epochs"),
    ([*TRAIN, "--epochs", "-3"], "--epochs"),
    ([*TRAIN, "--epochs", "2.5"], "--epochs"),
    ([*TRAIN, "--batch-size", "0"], "--batch-size"),
    ([*TRAIN, "--image-size", "0"], "--image-size"),
    ([*TRAIN, "--lr", "0"], "--lr"),
    ([*TRAIN, "--lr", "-0.0001"], "--lr"),
    ([*TRAIN, "--lr", "nan"], "--lr"),
    ([*TRAIN, "--lr", "inf"], "--lr"),
    ([*TRAIN, "--lr-backbone", "-1"], "--lr-backbone"),
    ([*TRAIN, "--lr-drop", "0"], "--lr-drop"),
    ([*TRAIN, "--weight-decay", "-0.1"], "--weight-decay"),
    ([*TRAIN, "--clip-max-norm", "-1"], "--clip-max-norm"),
    ([*TRAIN, "--num-classes", "0"], "--num-classes"),
    ([*TRAIN, "--max-steps", "0"], "--max-steps"),
    ([*TRAIN, "--checkpoint-every", "-1"], "--checkpoint-every"),
    ([*TRAIN, "--keep-checkpoints", "0"], "--keep-checkpoints"),
    ([*TRAIN, "--eval-every", "-1"], "--eval-every"),
    ([*TRAIN, "--workers", "-2"], "--workers"),
    ([*TRAIN, "--resume", "runs/no-such-run"], "--resume"),
    ([*EVAL, "--batch-size", "0"], "--batch-size"),
    ([*EVAL, "--image-size", "-1"], "--image-size"),
    ([*EVAL, "--workers", "-1"], "--workers"),
]


@pytest.mark.parametrize(("argv", "name"), BAD, ids=[" ".join(a[2:]) for a, _ in BAD])
def test_bad_numbers_are_usage_errors(
    argv: list[str], name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path / a) if a in ("DATA", "OUT") else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"zoo {argv[0]}: error: argument {name}"), error
    assert argv[argv.index(name) + 1] in error  # the value given
    assert not (tmp_path / "OUT").exists()  # nothing ran


def test_boundary_values_are_accepted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["shapes", str(out), "--num-train", "1", "--num-val", "0", "--size", "16"]) == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == ["000001.png"]
    assert list((out / "val").iterdir()) == []


def test_the_api_refuses_the_same_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_train must be an integer >= 0, got -5"):
        generate(tmp_path / "out", -5, 1)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="size >= 1"):
        ShapesSpec(size=0)
    for field, value in [("epochs", -1), ("lr", 0.0), ("lr", float("nan")), ("max_steps", 0)]:
        with pytest.raises(ValueError, match=f"TrainConfig.{field} must be"):
            TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="keep_checkpoints must be >= 1, got 0"):
        TrainConfig(keep_checkpoints=0)
