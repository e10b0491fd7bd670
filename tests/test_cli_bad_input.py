"""Bad input gets an error naming it: seeds out of range, COCO ids beyond int64,
``--overrides num_classes=``, a ``--categories`` file that is not JSON; the zoo's own
warnings (a dataset's fixes) are one line on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.shapes import SHAPES_MODEL, shapes_data, shapes_model
from support.tiny import tiny_model

import zoo
from zoo.cli import main
from zoo.data.validate import validate_coco
from zoo.training import TrainConfig
from zoo.training.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
HUGE = "99999999999999999999"  # > 2**64: torch and numpy overflow on it


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--model", "ddetr", "--data", "DATA", "--seed", HUGE],
        ["train", "--model", "ddetr", "--data", "DATA", "--seed", str(2**32)],
        ["shapes", "OUT", "--seed", HUGE],
    ],
    ids=["train huge", "train 2**32", "shapes"],
)
def test_a_seed_out_of_range_is_a_usage_error(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path / a) if a in ("DATA", "OUT") else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        f"zoo {argv[0]}: error: argument --seed: must be an integer in [0, 4294967295], "
        f"got {argv[-1]}"
    )


def test_the_largest_seed_is_accepted(tmp_path: Path) -> None:
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ValueError, match=r"TrainConfig.seed must be < 2\*\*32"):
        TrainConfig(seed=2**32)
    assert main(["shapes", str(tmp_path / "s"), "--num-train", "1", "--num-val", "0",
                 "--seed", str(2**32 - 1)]) == 0  # fmt: skip


@pytest.mark.parametrize("kind", ["images", "annotations", "categories"])
def test_ids_beyond_int64_are_named(tmp_path: Path, kind: str) -> None:
    data = shapes_data(tmp_path / "data", num_train=2, num_val=1)
    path = data / "annotations" / "train.json"
    coco = json.loads(path.read_text())
    coco[kind][0]["id"] = 2**70
    path.write_text(json.dumps(coco))
    report = validate_coco(path, data / "train")
    singular = {"images": "image", "annotations": "annotation", "categories": "category"}[kind]
    expected = f"{singular}s[0]: id {2**70} is outside the int64 range [-2**63, 2**63 - 1]"
    assert expected in [str(p) for p in report.errors]


def test_overrides_num_classes_is_num_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shapes_data(tmp_path / "data", num_train=2, num_val=1)
    overrides = [f"{k}={v}" for k, v in SHAPES_MODEL.items() if k != "num_classes"]
    argv = ["train", "--model", "ddetr", "--data", str(data), "--image-size", "48"]
    argv += ["--workers", "0", "--eval-every", "0", "--no-progress", "--max-steps", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "a"), "--num-classes", "6", "--overrides",
              "num_classes=7", *overrides])  # fmt: skip
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "zoo train: error: argument --overrides: num_classes=7 disagrees with --num-classes 6"
    )
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "b"), "--overrides", "num_classes=x"])
    assert "num_classes must be an integer >= 1, got 'x'" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main([*argv, "--out", str(run), "--overrides", "num_classes=7", *overrides]) == 0
    assert load_model(run).config.num_classes == 7


def test_categories_that_are_not_json_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = zoo.save_pretrained(tiny_model("ddetr"), tmp_path / "tiny")
    data = shapes_data(tmp_path / "data", num_train=1, num_val=1)
    categories = tmp_path / "categories.txt"
    categories.write_text("circle, square\n")
    argv = ["detect", str(data / "val"), "--model", str(model), "--out", str(tmp_path / "o")]
    assert main([*argv, "--format", "coco", "--categories", str(categories)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"zoo detect: ValueError: --categories '{categories}' is not a JSON")
    assert "expected a COCO annotations file or a JSON list" in error
    assert len(error.splitlines()) == 1


def test_dataset_warnings_are_one_line(tmp_path: Path) -> None:
    data = shapes_data(tmp_path / "data", num_train=1, num_val=1)
    path = data / "annotations" / "val.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["bbox"][0] = -4.0  # the left part outside the image: clipped
    ann = coco["annotations"][0]
    path.write_text(json.dumps(coco))
    model = zoo.save_pretrained(shapes_model(), tmp_path / "tiny")  # 2 levels for 64 px
    cmd = [sys.executable, "-m", "zoo", "eval", "--model", str(model), "--data", str(data)]
    cmd += ["--workers", "0", "--image-size", "64"]
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    box = [-4.0, *ann["bbox"][1:]]
    expected = (
        f"zoo eval: warning: {path}: 1 clipped box (first: annotation {ann['id']}: bbox {box})"
    )
    lines = done.stderr.splitlines()
    assert expected in lines, done.stderr
    assert not any("warnings.warn" in line or "validate.py" in line for line in lines)
