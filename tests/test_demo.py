"""``make demo`` / ``python -m zoo.demo``: the offline detection demo, against a stand-in model.

The bundled model (``zoo/pretrained/shapes-ddetr``) is trained separately; these tests save a tiny
random Deformable DETR with the shapes class names instead and point the demo at it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
import zoo.demo as demo
from zoo.data.shapes import CLASSES, ShapesSpec, render_image

REPO = Path(__file__).resolve().parents[1]
SIZE = 64  # small images keep the stand-in fast; the demo's default is 128


# A tiny Deformable DETR (random weights) standing in for the bundled model.
SMALL: dict[str, Any] = {
    "depth": 18,
    "width": 16,
    "norm": "group",
    "hidden_dim": 32,
    "nheads": 2,
    "enc_layers": 1,
    "dec_layers": 1,
    "ffn_dim": 64,
    "num_queries": 10,
    "num_levels": 2,
}


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random shapes model saved in the zoo format."""
    torch.manual_seed(0)
    model = zoo.create_model("ddetr", **SMALL, num_classes=5, class_names=CLASSES, image_size=SIZE)
    return zoo.save_pretrained(model, tmp_path_factory.mktemp("standin") / "shapes-ddetr")


@pytest.fixture
def bundled(standin: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in in place of the bundled model."""
    monkeypatch.setattr(demo, "DEFAULT_MODEL", standin)
    return standin


def expected_truth(num_images: int, seed: int, size: int) -> list[list[tuple[str, list[int]]]]:
    """The generated images' objects, re-rendered here: (class name, xyxy box) each."""
    rng = np.random.default_rng([seed, sum(b"demo")])
    images = []
    for _ in range(num_images):
        _, objects = render_image(rng, ShapesSpec(size=size))
        images.append(
            [
                (CLASSES[o["category"]], [o["bbox"][0], o["bbox"][1], *_corner(o["bbox"])])
                for o in objects
            ]
        )
    return images


def _corner(bbox: list[int]) -> list[int]:
    x, y, w, h = bbox
    return [x + w, y + h]


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def found_independently(detections: list[dict], truth: list[tuple[str, list[int]]]) -> int:
    """Greedy one-to-one matching (score order, same class, IoU >= 0.5), in plain Python."""
    taken: set[int] = set()
    for d in sorted(detections, key=lambda d: -d["score"]):
        candidates = [
            (_iou(d["box"], box), g)
            for g, (name, box) in enumerate(truth)
            if g not in taken and name == d["name"] and _iou(d["box"], box) >= 0.5
        ]
        if candidates:
            taken.add(max(candidates)[1])
    return len(taken)


def table_rows(text: str) -> dict[str, tuple[int, int, int, int]]:
    """``image -> (truth, detected, found, truth again)`` from the printed table."""
    rows = re.findall(r"^\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)/(\d+)$", text, flags=re.M)
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


def check_summary(text: str, out: Path, truths: list[list[tuple[str, list[int]]]]) -> int:
    """The printed table agrees with detections.json and the re-rendered ground truth."""
    records = json.loads((out / "detections.json").read_text())
    rows = table_rows(text)
    total_found = 0
    for i, (record, truth) in enumerate(zip(records, truths, strict=True), start=1):
        name = f"shapes_{i:02d}.png"
        found = found_independently(record["detections"], truth)
        assert rows[name] == (len(truth), len(record["detections"]), found, len(truth))
        total_found += found
    n_truth = sum(len(t) for t in truths)
    n_det = sum(len(r["detections"]) for r in records)
    assert rows["all"] == (n_truth, n_det, total_found, n_truth)
    return total_found


def test_demo_generates_detects_and_summarises(
    bundled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo-output"
    argv = ["--out", str(out), "--num-images", "3", "--size", str(SIZE), "--threshold", "0.0"]
    assert demo.main([*argv, "--seed", "7"]) == 0
    text = capsys.readouterr().out

    truths = expected_truth(3, seed=7, size=SIZE)
    names = [f"shapes_{i:02d}.png" for i in (1, 2, 3)]
    # The generated inputs are exactly the re-rendered images, with their ground truth.
    rng = np.random.default_rng([7, sum(b"demo")])
    for name in names:
        rendered, _ = render_image(rng, ShapesSpec(size=SIZE))
        assert np.array_equal(np.asarray(Image.open(out / "images" / name)), np.asarray(rendered))
    ground = json.loads((out / "images" / "ground_truth.json").read_text())
    assert [[(o["name"], o["box"]) for o in g["objects"]] for g in ground] == truths
    # One annotated PNG per image (the same size as the input), one JSON for all.
    assert sorted(p.name for p in out.glob("*.png")) == names
    # Drawn 4x larger (the default --view-scale): the boxes scale with the picture.
    assert Image.open(out / names[0]).size == (4 * SIZE, 4 * SIZE)
    records = json.loads((out / "detections.json").read_text())
    assert [Path(r["image"]).name for r in records] == names
    assert all(r["detections"] for r in records)  # threshold 0: every query's top classes
    # Where the results are.
    assert f"annotated images: {out}/ (3 PNGs: shapes_01.png ... shapes_03.png)" in text
    assert f"detections (JSON): {out / 'detections.json'}" in text
    check_summary(text, out, truths)


def test_summary_counts_found_objects(
    bundled: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model answering (nearly) the ground truth: found objects are counted right."""
    truths = expected_truth(4, seed=0, size=SIZE)
    calls = iter(range(len(truths)))

    real_load = demo.load_model

    def oracle(source: Any, device: torch.device) -> Any:
        model = real_load(source, device)

        def predict(images: list, threshold: float = 0.5, **_: Any) -> list[dict]:
            out = []
            for _ in images:
                truth = truths[next(calls)]
                boxes = [list(map(float, box)) for _, box in truth]
                labels = [CLASSES.index(name) for name, _ in truth]
                if len(truth) >= 2:
                    labels[0] = (labels[0] + 1) % len(CLASSES)  # wrong class: not found
                    x0, y0, x1, y1 = boxes[1]
                    boxes[1] = [x0, y0, x0 + (x1 - x0) / 3, y1]  # IoU 1/3: not found
                if truth:  # a duplicate of the last box finds nothing more
                    boxes.append(list(boxes[-1]))
                    labels.append(labels[-1])
                scores = torch.linspace(0.9, 0.6, len(boxes))
                out.append(
                    {
                        "boxes": torch.tensor(boxes).reshape(-1, 4),
                        "scores": scores,
                        "labels": torch.tensor(labels, dtype=torch.int64),
                    }
                )
            return out

        model.predict = predict
        return model

    monkeypatch.setattr(demo, "load_model", oracle)
    out = tmp_path / "out"
    assert demo.main(["--out", str(out), "--num-images", "4", "--size", str(SIZE)]) == 0
    total = check_summary(capsys.readouterr().out, out, truths)
    # Per image: all but the wrong-class and the shrunk box (the first two objects).
    expected = sum(len(t) - 2 if len(t) >= 2 else len(t) for t in truths)
    assert total == expected > 0


def test_count_found_rules() -> None:
    truth = [
        demo.GroundTruth("circle", (0.0, 0.0, 10.0, 10.0)),
        demo.GroundTruth("square", (20.0, 20.0, 30.0, 30.0)),
    ]

    def det(name: str, box: tuple[float, ...], score: float = 0.9) -> dict:
        return {"name": name, "box": list(box), "score": score}

    assert demo.count_found([], truth) == 0
    assert demo.count_found([det("circle", (0, 0, 10, 10))], []) == 0
    assert demo.count_found([det("circle", (0, 0, 10, 10))], truth) == 1
    assert demo.count_found([det("square", (0, 0, 10, 10))], truth) == 0  # wrong class
    assert demo.count_found([det("circle", (0, 0, 10, 5))], truth) == 1  # IoU exactly 0.5
    assert demo.count_found([det("circle", (0, 0, 10, 4))], truth) == 0  # IoU 0.4
    both = [det("circle", (0, 0, 10, 10)), det("circle", (1, 0, 10, 10), 0.8)]
    assert demo.count_found(both, truth) == 1  # a duplicate finds no second object
    all_found = [det("circle", (1, 1, 10, 10)), det("square", (20, 20, 29, 30))]
    assert demo.count_found(all_found, truth) == 2


def test_images_folder(bundled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.jpg"):
        render_image(rng, ShapesSpec(size=SIZE))[0].save(photos / name)
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    argv = ["--images", str(photos), "--out", str(out), "--threshold", "0.0", "--size", str(SIZE)]
    assert demo.main(argv) == 0
    text = capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]
    records = json.loads((out / "detections.json").read_text())
    assert [Path(r["image"]).name for r in records] == ["a.png", "b.jpg"]
    assert re.search(r"^  a\.png: \d+ detections: ", text, flags=re.M)
    assert f"annotated images: {out}/ (2 PNGs: a.png ... b.png)" in text
    assert not (out / "images").exists()  # nothing generated


def test_images_glob_and_no_match(
    bundled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(2)
    render_image(rng, ShapesSpec(size=SIZE))[0].save(tmp_path / "x.png")
    out = tmp_path / "out"
    assert demo.main(["--images", str(tmp_path / "*.png"), "--out", str(out)]) == 0
    assert (out / "x.png").is_file()
    capsys.readouterr()
    assert demo.main(["--images", str(tmp_path / "*.jpeg"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no image file matches") and err.count("\n") == 1


def test_refuses_to_overwrite_inputs(
    bundled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    render_image(np.random.default_rng(3), ShapesSpec(size=SIZE))[0].save(tmp_path / "x.png")
    assert demo.main(["--images", str(tmp_path), "--out", str(tmp_path)]) == 1
    assert "would overwrite input image" in capsys.readouterr().err


def test_missing_bundled_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "DEFAULT_MODEL", tmp_path / "demo" / "shapes-ddetr")
    assert demo.main(["--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the bundled demo model is missing: ")
    assert "shapes-ddetr" in err and "README.md" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_coco_model_needs_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the demo must not load a model it cannot use")

    monkeypatch.setattr(zoo, "load", no_load)
    assert demo.main(["--model", "ddetr-two-stage", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --model ddetr-two-stage: the COCO models need real photos")
    assert "--images" in err and err.count("\n") == 1


def test_not_a_shapes_model_needs_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A local model whose classes are not the shapes: generated shapes mean nothing to it."""
    model = zoo.create_model("ddetr", **SMALL, num_classes=3)
    folder = zoo.save_pretrained(model, tmp_path / "other")
    assert demo.main(["--model", str(folder), "--out", str(tmp_path / "out")]) == 1
    assert "is not a shapes model" in capsys.readouterr().err


def test_offline_hub_model_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """zoo.load's own offline error surfaces as one line and exit code 1."""
    import zoo.weights.hub

    def offline(repo_id: str, revision: str | None = None, **kwargs: Any) -> Path:
        raise zoo.WeightsNotFoundError(
            zoo.weights.hub._offline_message(repo_id, revision, None, True)
        )

    monkeypatch.setattr(zoo.weights.hub, "download", offline)
    image = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(image)
    argv = ["--model", "ddetr-two-stage", "--images", str(image), "--out", str(tmp_path / "o")]
    assert demo.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: SenseTime/deformable-detr-with-box-refine-two-stage")
    assert "is not in the Hugging Face cache" in err and err.count("\n") == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_passes_globs_intact() -> None:
    """``make demo IMAGES=...`` quotes each path, so Python (not the shell) expands globs."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "demo", "MODEL=ddetr", "IMAGES=a/*.jpg b c.png"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    line = result.stdout.strip().splitlines()[-1]
    assert line.endswith("-m zoo.demo --model 'ddetr' --images 'a/*.jpg' 'b' 'c.png'")


BUNDLED_WEIGHTS = REPO / "zoo" / "pretrained" / "shapes-ddetr" / "model.safetensors"


@pytest.mark.skipif(not BUNDLED_WEIGHTS.is_file(), reason="the bundled demo model is not trained")
def test_bundled_model_loads_and_is_small() -> None:
    assert BUNDLED_WEIGHTS.stat().st_size <= 10 * 1024 * 1024
    model = zoo.load(BUNDLED_WEIGHTS.parent)
    assert demo.is_shapes_model(model)
