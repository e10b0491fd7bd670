"""Drawing detections and deformable sampling points; the detection files written."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
from PIL import Image
from support.tiny import TINY

import zoo
from zoo.detect.drawing import draw_detections, draw_sampling, heat_color, label_color
from zoo.detect.files import detect_files, find_images
from zoo.detect.sampling import predict_with_sampling
from zoo.models.pipeline.coco_names import COCO_CATEGORY_NAMES, class_names

GREY = (128, 128, 128)


def test_coco_names_follow_the_category_ids() -> None:
    assert len(COCO_CATEGORY_NAMES) == 91
    names = class_names(91)
    assert (names[0], names[1], names[12], names[44], names[90]) == (
        "N/A",
        "person",
        "N/A",
        "bottle",
        "toothbrush",
    )
    assert class_names(3) == ["class 0", "class 1", "class 2"]


def test_boxes_are_drawn_at_their_edges() -> None:
    image = Image.new("RGB", (320, 240), GREY)
    box = torch.tensor([[40.0, 60.0, 200.0, 180.0]])
    out = draw_detections(image, box, torch.tensor([0.9]), torch.tensor([3]), class_names(91))
    color = label_color(3)
    for xy in [(40, 120), (200, 120), (190, 60), (120, 180)]:  # left, right, top, bottom
        assert out.getpixel(xy) == color, xy
    assert out.getpixel((120, 120)) == GREY  # inside: untouched
    # The tag sits on a filled background just above the box.
    assert out.getpixel((41, 58)) == color
    assert image.getpixel((40, 120)) == GREY  # the input is not drawn on


def test_line_width_grows_with_the_image() -> None:
    image = Image.new("RGB", (2000, 1500), GREY)
    box = torch.tensor([[400.0, 400.0, 1600.0, 1200.0]])
    out = draw_detections(image, box, torch.tensor([0.9]), torch.tensor([0]), ["thing"])
    assert out.getpixel((405, 800)) == label_color(0)  # 6 px wide at this size


def test_sampling_sheet_draws_each_level_in_its_own_panel() -> None:
    image = Image.new("RGB", (100, 80), GREY)
    levels = 4
    # Query 0 samples one point per level, at x = 10 + 20 * level on the line y = 76; its
    # weights are all equal, so every point gets the top colour. Query 1 samples nothing
    # visible (off the image).
    locations = torch.full((2, 1, levels, 1, 2), -50.0)
    for level in range(levels):
        locations[0, 0, level, 0] = torch.tensor([10.0 + 20 * level, 76.0])
    sheet = draw_sampling(
        image,
        boxes=torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 20.0, 90.0, 70.0]]),
        references=torch.tensor([[30.0, 30.0], [75.0, 45.0]]),
        locations=locations,
        weights=torch.ones(2, 1, levels, 1),
        strides=[8, 16, 32, 64],
    )
    assert sheet.size == (levels * 100, 80)
    faded = sheet.getpixel((30, 60))
    assert faded != GREY and all(c > GREY[0] for c in faded)  # the picture is faded
    for level in range(levels):
        x0 = 100 * level
        # Both boxes are outlined in every panel, each in its own colour.
        assert sheet.getpixel((x0 + 10, 30)) == label_color(0), level  # box 0, left edge
        assert sheet.getpixel((x0 + 75, 70)) == label_color(1), level  # box 1, bottom edge
        assert sheet.getpixel((x0 + 30, 60)) == faded  # inside: nothing drawn
        # The panel shows its own level's point, not the others'.
        for other in range(levels):
            pixel = sheet.getpixel((x0 + 10 + 20 * other, 76))
            if other == level:
                assert pixel == heat_color(1.0), (level, other)
            else:
                assert pixel == faded, (level, other)


def tiny_ddetr(name: str = "ddetr", num_classes: int = 91) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create_model(name, **TINY, num_queries=8, num_classes=num_classes).eval()


def _images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    gen = torch.Generator().manual_seed(0)
    for i, (w, h) in enumerate(sizes):
        pixels = (torch.rand(h, w, 3, generator=gen) * 255).to(torch.uint8).numpy()
        path = folder / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def test_detect_files_writes_pictures_and_json_that_match_predict(tmp_path: Path) -> None:
    model = tiny_ddetr()
    paths = _images(tmp_path / "in", [(96, 64), (56, 80)])
    records = detect_files(model, paths, tmp_path / "out", threshold=0.0, batch_size=2)
    expected = model.predict([Image.open(p).convert("RGB") for p in paths], threshold=0.0)
    for path, record, pred in zip(paths, records, expected, strict=True):
        written = json.loads((tmp_path / "out" / f"{path.stem}.json").read_text())
        assert written == record
        assert [d["box"] for d in record["detections"]] == pred["boxes"].tolist()
        assert [d["score"] for d in record["detections"]] == pred["scores"].tolist()
        assert [d["label"] for d in record["detections"]] == pred["labels"].tolist()
        assert all(d["name"] == COCO_CATEGORY_NAMES[d["label"]] for d in record["detections"])
        assert Image.open(tmp_path / "out" / f"{path.stem}.png").size == Image.open(path).size


def test_drawn_png_has_the_predicted_boxes(tmp_path: Path) -> None:
    model = tiny_ddetr()
    boxes = torch.tensor([[20.0, 30.0, 150.0, 110.0]])

    def predict(
        self: torch.nn.Module,
        images: list,
        threshold: float = 0.5,
        shortest_edge: int | None = None,
    ) -> list[dict]:
        assert shortest_edge is None  # detect_files leaves the size to the model's config
        return [{"boxes": boxes, "scores": torch.tensor([0.8]), "labels": torch.tensor([18])}]

    model.predict = types.MethodType(predict, model)
    (path,) = _images(tmp_path / "in", [(200, 150)])
    Image.new("RGB", (200, 150), GREY).save(path)
    records = detect_files(model, [path], tmp_path / "out", one_json=True)
    out = Image.open(tmp_path / "out" / "img0.png").convert("RGB")
    for xy in [(20, 70), (150, 70), (140, 30), (85, 110)]:
        assert out.getpixel(xy) == label_color(18), xy
    assert out.getpixel((85, 70)) == GREY
    assert records[0]["detections"][0]["name"] == "dog"
    assert json.loads((tmp_path / "out" / "detections.json").read_text()) == records
    # draw_scale: the same boxes on a 3x enlarged picture; the JSON keeps original pixels.
    big_records = detect_files(model, [path], tmp_path / "big", one_json=True, draw_scale=3)
    big = Image.open(tmp_path / "big" / "img0.png").convert("RGB")
    assert big.size == (600, 450)
    for x, y in [(20, 70), (150, 70), (140, 30), (85, 110)]:
        assert big.getpixel((3 * x, 3 * y)) == label_color(18), (x, y)
    assert big.getpixel((255, 210)) == GREY
    assert big_records == records


def test_sampling_points_map_to_image_pixels() -> None:
    """With zero offsets every sampling point is the reference point itself, whatever
    the padding: checks the conversion from each level's padded frame to pixels."""
    model = tiny_ddetr()
    with torch.no_grad():
        last = model.decoder.layers[-1].cross_attn
        last.sampling_offsets.weight.zero_()
        last.sampling_offsets.bias.zero_()
    images = [Image.new("RGB", (96, 64), GREY), Image.new("RGB", (56, 80), GREY)]
    model.train()
    predictions, views = predict_with_sampling(model, images, threshold=0.0, top_k=3)
    assert model.training  # the mode is restored
    assert model._recorded is None  # the recording hook is closed
    expected = model.predict(images, threshold=0.0)
    for view, pred, pred2 in zip(views, predictions, expected, strict=True):
        assert torch.equal(pred["boxes"], pred2["boxes"])
        assert view.locations.shape == (3, TINY["nheads"], 4, 4, 2)
        assert view.weights.shape == (3, TINY["nheads"], 4, 4)
        refs = view.references[:, None, None, None, :].expand_as(view.locations)
        torch.testing.assert_close(view.locations, refs, atol=1e-3, rtol=0)
    assert views[0].strides == [8, 16, 32, 64]


def test_sampling_needs_a_deformable_model() -> None:
    torch.manual_seed(0)
    detr = zoo.create_model("detr-r50", **TINY, num_queries=4).eval()
    with pytest.raises(ValueError, match="Deformable DETR"):
        predict_with_sampling(detr, [Image.new("RGB", (64, 64))], 0.5)


def test_find_images_reads_files_folders_and_globs(tmp_path: Path) -> None:
    paths = _images(tmp_path / "a", [(8, 8), (8, 8)])
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    other = _images(tmp_path / "b", [(8, 8)])
    found = find_images([str(tmp_path / "a"), str(tmp_path / "b" / "*.png"), str(paths[0])])
    assert found == [*paths, *other]
    with pytest.raises(FileNotFoundError, match="no image file matches"):
        find_images([str(tmp_path / "missing" / "*.jpg")])
