"""The exported ONNX file explains itself: its metadata_props describe the input, the
resize rule, the classes and the outputs; ``zoo detect --model model.onnx`` (onnxruntime)
gives the PyTorch model's detections; the ONNX runner preprocesses exactly as ``predict``
does; a missing ``export`` extra is named with the command that installs it."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from support.tiny import randomize_, tiny_model

import zoo
from zoo.cli import main as run
from zoo.detect.onnx_runner import EXPORT_EXTRA, EXPORT_HINT, OnnxDetector
from zoo.export import export_onnx
from zoo.models.pipeline.preprocess import preprocess
from zoo.models.pipeline.resize import inference_size

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("cat", "dog", "car", "bus", "tree")
IMAGE_SIZE = 96
# (H, W) of the test images: landscape, portrait, one capped by longest_edge.
IMAGE_SIZES = [(70, 110), (120, 64), (40, 200)]


def _model(name: str) -> torch.nn.Module:
    model = tiny_model(name, class_names=NAMES, image_size=IMAGE_SIZE)
    randomize_(model, seed=4)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, Path]]:
    out = {}
    for name in ("ddetr", "detr-r50"):
        folder = tmp_path_factory.mktemp(name)
        model = _model(name)
        out[name] = (model, export_onnx(model, folder / "model.onnx"))
    return out


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in IMAGE_SIZES
    ]


@pytest.mark.parametrize("name", ["ddetr", "detr-r50"])
def test_metadata_describes_the_model(name: str, exported: dict) -> None:
    _, path = exported[name]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == list(NAMES)
    assert json.loads(meta["image_mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(meta["image_std"]) == [0.229, 0.224, 0.225]
    # 96 * 1333 / 800 = 159.96
    assert (int(meta["shortest_edge"]), int(meta["longest_edge"])) == (96, 160)
    assert meta["score_function"] == ("softmax" if name.startswith("detr") else "sigmoid")
    assert meta["box_format"].startswith("cxcywh")
    assert "(N, 3, H, W)" in meta["input"] and "[0, 1]" in meta["input"]


def _assert_same_detections(got: Any, want: Any) -> None:
    assert got["labels"].tolist() == want["labels"].tolist()
    torch.testing.assert_close(got["scores"], want["scores"], atol=1e-4, rtol=0)
    torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-2, rtol=0)  # pixels


@pytest.mark.parametrize("name", ["ddetr", "detr-r50"])
def test_onnx_runner_gives_the_pytorch_detections(name: str, exported: dict) -> None:
    model, path = exported[name]
    detector = OnnxDetector(path)
    threshold = 0.0 if name == "ddetr" else 0.05
    # One image per call on both sides: a padded batch changes PyTorch's own results a
    # little (the padding enters the backbone's later convolutions), and the ONNX graph
    # takes no mask, so the runner feeds one image at a time.
    want = [model.predict(image, threshold=threshold)[0] for image in _images()]
    got = detector.predict(_images(), threshold=threshold)
    assert sum(len(w["labels"]) for w in want) > 0
    for g, w in zip(got, want, strict=True):
        _assert_same_detections(g, w)
        assert g["names"] == w["names"]


def test_onnx_runner_preprocesses_like_predict(
    exported: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = exported["ddetr"]
    detector = OnnxDetector(path)
    seen: list[np.ndarray] = []
    real_run = detector.session.run

    def spy(names: list[str], feed: dict[str, np.ndarray]) -> Any:
        seen.append(feed["pixel_values"])
        return real_run(names, feed)

    monkeypatch.setattr(detector.session, "run", spy)
    detector.predict(_images())
    shortest, longest = inference_size(IMAGE_SIZE)
    for image, fed in zip(_images(), seen, strict=True):
        want = preprocess(
            image, shortest, longest, mean=detector.config.image_mean, std=detector.config.image_std
        )
        assert torch.equal(torch.from_numpy(fed), want.pixel_values)


def test_zoo_detect_runs_the_onnx_file(exported: dict, tmp_path: Path) -> None:
    model, path = exported["ddetr"]
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(_images()):
        image.save(images / f"im{i}.png")
    saved = zoo.save_pretrained(model, tmp_path / "model")
    common = [str(images), "--threshold", "0.1", "--one-json", "--device", "cpu"]
    common += ["--batch-size", "1"]  # unpadded, as the ONNX runner feeds them
    assert run(["detect", *common, "--model", str(path), "--out", str(tmp_path / "onnx")]) == 0
    assert run(["detect", *common, "--model", str(saved), "--out", str(tmp_path / "torch")]) == 0
    got = json.loads((tmp_path / "onnx" / "detections.json").read_text())
    want = json.loads((tmp_path / "torch" / "detections.json").read_text())
    assert [r["image"] for r in got] == [r["image"] for r in want]
    assert sum(len(r["detections"]) for r in want) > 0
    for g, w in zip(got, want, strict=True):
        assert [d["name"] for d in g["detections"]] == [d["name"] for d in w["detections"]]
        for a, b in zip(g["detections"], w["detections"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
            assert a["box"] == pytest.approx(b["box"], abs=1e-2)


def test_a_file_without_metadata_is_named(exported: dict, tmp_path: Path) -> None:
    proto = onnx.load(str(exported["ddetr"][1]))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match=r"bare.onnx: no zoo metadata .*zoo export"):
        OnnxDetector(tmp_path / "bare.onnx")


def test_the_export_extra_exists_and_is_named_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert EXPORT_EXTRA == f"{project['name']}[export]"
    extra = {req.split(">")[0].split("=")[0] for req in project["optional-dependencies"]["export"]}
    assert {"onnx", "onnxruntime", "onnxscript"} <= extra
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnx" else real(n, *a)
    )
    assert run(["export", "shapes-demo", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "zoo export needs the export extra (onnx not installed)" in err
    assert EXPORT_HINT in err and f"'{EXPORT_EXTRA}'" in err
    # The hint's bounds are the extra's own (a user pasting it gets what the extra gets).
    for req in project["optional-dependencies"]["export"]:
        assert f"'{req}'" in EXPORT_HINT
    assert not (tmp_path / "m.onnx").exists()
