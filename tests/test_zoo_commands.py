"""The ``list``, ``detect`` and ``convert`` subcommands, run through argparse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from support.tiny import TINY, randomize_
from support.transformers_models import build_hf, to_official

import zoo
from zoo.cli import main as run


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_list_prints_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["list"]) == 0
    out = capsys.readouterr().out
    for record in zoo.list_models():
        assert record.name in out and (record.repo_id or "-") in out  # "-": bundled
    assert "83ecd2694519" in out and "44.5" in out and "Apache-2.0" in out
    assert "main (not pinned)" in out  # detr-r101


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = zoo.create_model("ddetr", **TINY, num_queries=8, num_classes=3)
    randomize_(model, seed=1)
    return zoo.save_pretrained(model, tmp_path_factory.mktemp("model") / "tiny")


def test_detect_writes_one_picture_and_json_per_image(
    tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate([(90, 60), (50, 70), (64, 64)]):
        Image.new("RGB", size, (i * 60, 100, 150)).save(images / f"p{i}.jpg")
    out = tmp_path / "out"
    argv = [
        "detect",
        str(images / "p0.jpg"),
        str(images / "p[12].jpg"),
        "--model",
        str(tiny_folder),
    ]
    argv += ["--out", str(out), "--threshold", "0.0", "--batch-size", "2", "--show-sampling"]
    assert run(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"p{i}{s}" for i in range(3) for s in (".json", ".png", "_sampling.png"))
    record = json.loads((out / "p1.json").read_text())
    assert record["width"] == 50 and record["height"] == 70
    assert {d["name"] for d in record["detections"]} <= {"class 0", "class 1", "class 2"}
    assert "detections in 3 images" in capsys.readouterr().out
    # Drawn enlarged so the shorter side is at least 512 px: 50x70 by ceil(512 / 50) = 11.
    with Image.open(out / "p1.png") as picture:
        assert picture.size == (550, 770)
    assert run([*argv[:2], "--model", str(tiny_folder), "--out", str(out), "--scale", "3"]) == 0
    with Image.open(out / "p0.png") as picture:
        assert picture.size == (270, 180)


def test_detect_sampling_on_detr_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    detr = zoo.create_model("detr-r50", **TINY, num_queries=4, num_classes=3)
    folder = zoo.save_pretrained(detr, tmp_path / "detr")
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    argv = ["detect", str(tmp_path / "x.png"), "--model", str(folder), "--out", str(tmp_path / "o")]
    assert run([*argv, "--show-sampling"]) == 2
    assert "--show-sampling needs a Deformable DETR model" in capsys.readouterr().err


def test_convert_official_pth_and_transformers_folder(tmp_path: Path) -> None:
    hf = build_hf("ddetr-refine", seed=4)
    transformers_folder = tmp_path / "hf"
    hf.save_pretrained(transformers_folder)
    assert run(["convert", str(transformers_folder), str(tmp_path / "a")]) == 0
    _same(zoo.load(tmp_path / "a"), zoo.load(transformers_folder))
    # The same weights as an official .pth; the heads are not recorded there.
    pth = tmp_path / "checkpoint.pth"
    torch.save({"model": to_official(hf.state_dict(), deformable=True)}, pth)
    assert (
        run(["convert", str(pth), str(tmp_path / "b"), "--overrides", f"nheads={TINY['nheads']}"])
        == 0
    )
    converted = zoo.load(tmp_path / "b")
    _same(converted, zoo.load(transformers_folder))
    assert json.loads((tmp_path / "b" / "config.json").read_text())["variant"] == "ddetr-refine"
    # And back: converting a zoo folder is the identity.
    assert run(["convert", str(tmp_path / "b"), str(tmp_path / "c")]) == 0
    _same(zoo.load(tmp_path / "c"), converted)
