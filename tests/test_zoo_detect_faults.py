"""``zoo detect`` and ``zoo convert`` on bad input: a corrupt image is skipped by name and
no finished detection is lost; bad arguments are refused at parsing (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.tiny import tiny_model

import zoo
from zoo.cli import main as run
from zoo.detect.files import detect_files, unique_stems


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.save_pretrained(tiny_model("ddetr"), tmp_path_factory.mktemp("m") / "tiny")


def _images(folder: Path, count: int = 7, bad: int = 4) -> list[Path]:
    """``count`` small JPEGs, the ``bad``-th corrupt (a truncated one after it too)."""
    folder.mkdir(exist_ok=True)
    gen = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"im{i}.jpg"
        Image.fromarray(gen.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    paths[bad].write_bytes(b"not a jpeg at all")
    return paths


def test_a_corrupt_image_is_skipped_by_name_and_the_rest_finish(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _images(tmp_path / "images")
    out = tmp_path / "out"
    argv = ["detect", *map(str, paths), "--model", str(folder), "--out", str(out)]
    argv += ["--one-json", "--batch-size", "2", "--threshold", "0", "--image-size", "64"]
    assert run(argv) == 0
    records = json.loads((out / "detections.json").read_text())
    assert [r["image"] for r in records] == [str(p) for i, p in enumerate(paths) if i != 4]
    err = capsys.readouterr().err
    assert f"skipped 1 of 7 images that could not be read: {paths[4]}" in err
    # --strict: the same work, then a failure status.
    assert run([*argv, "--strict"]) == 1
    assert len(json.loads((out / "detections.json").read_text())) == 6


def test_truncated_image_is_skipped_too(folder: Path, tmp_path: Path) -> None:
    paths = _images(tmp_path / "images", count=3, bad=0)
    paths[1].write_bytes(paths[1].read_bytes()[:200])
    records = detect_files(zoo.load(folder), paths, tmp_path / "out", threshold=0.0)
    assert [r["image"] for r in records] == [str(paths[2])]


def test_one_json_keeps_what_finished_when_the_run_stops(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = zoo.load(folder)
    paths = _images(tmp_path / "images", count=4, bad=3)
    predict = model.predict
    calls = []

    def failing(*args: object, **kwargs: object) -> list:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return predict(*args, **kwargs)

    monkeypatch.setattr(model, "predict", failing)
    with pytest.raises(RuntimeError):
        detect_files(model, paths, tmp_path / "out", batch_size=2, one_json=True)
    records = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [r["image"] for r in records] == [str(paths[0]), str(paths[1])]


def test_16_bit_png_detects_like_its_8_bit_twin(folder: Path, tmp_path: Path) -> None:
    grey = np.random.default_rng(1).integers(0, 255, (48, 40), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    a, b = detect_files(
        zoo.load(folder), [tmp_path / "g8.png", tmp_path / "g16.png"], tmp_path / "o"
    )
    assert a["detections"] == b["detections"]
    drawn = np.asarray(Image.open(tmp_path / "o" / "g16.png"))
    assert drawn.mean() < 250  # not the white sheet .convert("RGB") made of it


def test_output_names_never_collide(folder: Path, tmp_path: Path) -> None:
    """x.png, x.jpg and x_1.png give three pictures and three JSON files; y.png beside
    y_sampling.png keeps both sampling sheets; an input in --out is never overwritten."""
    images = tmp_path / "images"
    images.mkdir()
    inputs = ["x.png", "x.jpg", "x_1.png", "y.png", "y_sampling.png"]
    gen = np.random.default_rng(2)
    for i, name in enumerate(inputs):  # sizes tell the pictures apart
        Image.fromarray(gen.integers(0, 255, (40 + 8 * i, 56, 3), dtype=np.uint8)).save(
            images / name
        )
    paths = [images / name for name in inputs]
    out = tmp_path / "out"
    records = detect_files(zoo.load(folder), paths, out, threshold=0.0, show_sampling=True)
    assert len(records) == 5
    names = ["x", "x.jpg", "x_1", "y", "y_sampling.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}{suffix}" for n in names for suffix in (".png", ".json", "_sampling.png")
    )
    for name, path in zip(names, paths, strict=True):
        assert json.loads((out / f"{name}.json").read_text())["image"] == str(path)
        with Image.open(out / f"{name}.png") as picture, Image.open(path) as source:
            assert picture.size == source.size
    # Two inputs of one name from two folders, and --out the folder of the inputs.
    (tmp_path / "other").mkdir()
    shutil.copy(images / "x.png", tmp_path / "other" / "x.png")
    twins = [images / "x.png", tmp_path / "other" / "x.png"]
    assert unique_stems(twins) == ["x", "x.png"]
    assert unique_stems([*twins, images / "x.png.png"]) == ["x", "x.png", "x.png.png"]
    assert unique_stems([images / "x.png", images / "x.png"]) == ["x", "x.png"]
    assert unique_stems([images / "x.png"] * 3) == ["x", "x.png", "x.png~2"]
    assert unique_stems([images / "x.png", images / "y.png"], images) == ["x.png", "y.png"]
    before = (images / "x.png").read_bytes()
    detect_files(zoo.load(folder), [images / "x.png"], images, threshold=0.0)
    assert (images / "x.png").read_bytes() == before
    assert (images / "x.png.png").is_file() and (images / "x.png.json").is_file()


@pytest.mark.parametrize(
    "extra,argument",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--top-k", "-1"], "--top-k"),
        (["--threshold", "1.5"], "--threshold"),
        (["--threshold", "-0.1"], "--threshold"),
        (["--threshold", "nan"], "--threshold"),
        (["--image-size", "0"], "--image-size"),
        (["--batch-size", "two"], "--batch-size"),
    ],
)
def test_detect_refuses_bad_arguments_at_parsing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], argument: str
) -> None:
    argv = ["detect", "x.png", "--model", "ddetr", "--out", str(tmp_path), *extra]
    with pytest.raises(SystemExit) as exit_:
        run(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argument}" in err and extra[1] in err


def test_convert_of_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for src in ["/nonexistent.pth", "./no/such/run"]:
        with pytest.raises(SystemExit) as exit_:
            run(["convert", src, str(tmp_path / "out")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"argument src: no such file or folder: '{src}'" in err
        assert "unknown model" not in err
    with pytest.raises(SystemExit):
        run(["detect", "x.png", "--model", "/nonexistent.pth", "--out", str(tmp_path)])
    assert "argument --model: no such file or folder" in capsys.readouterr().err
