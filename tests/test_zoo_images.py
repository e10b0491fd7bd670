"""Every image a user holds reaches the model by its real range, or is refused by name:
16-bit and float PIL modes, transparency, numpy arrays, paths, single images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.tiny import tiny_model

from zoo.models.pipeline.images import image_to_tensor, to_rgb_image

transformers = pytest.importorskip("transformers")


def _gradient(h: int = 24, w: int = 32) -> np.ndarray:
    """(H, W, 3) uint8 with every channel different, so channel order shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("ddetr", class_names=[f"thing{k}" for k in range(5)])


def _same(a: list, b: list) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x["boxes"], y["boxes"])
        torch.testing.assert_close(x["scores"], y["scores"])
        assert torch.equal(x["labels"], y["labels"])


def test_16_bit_png_gives_the_detections_of_its_8_bit_twin(model, tmp_path: Path) -> None:
    grey8 = _gradient()[..., 0]
    # x * 257 maps 0..255 onto 0..65535 exactly, so both files hold the same picture.
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    im16 = Image.open(tmp_path / "g16.png")
    assert im16.mode == "I;16"
    expected = torch.from_numpy(grey8 / 255.0).float()
    torch.testing.assert_close(image_to_tensor(im16), expected.expand(3, -1, -1))
    _same(
        model.predict([im16], threshold=0.0, shortest_edge=64),
        model.predict([Image.open(tmp_path / "g8.png")], threshold=0.0, shortest_edge=64),
    )
    # For drawing: the 8-bit RGB picture, not a white sheet.
    assert np.array_equal(np.asarray(to_rgb_image(im16))[..., 1], grey8)


def test_32_bit_int_and_float_modes_by_their_range() -> None:
    values = np.array([[0, 1000, 65535]], dtype=np.int32)
    got = image_to_tensor(Image.fromarray(values, mode="I"))
    torch.testing.assert_close(got[0], torch.tensor([[0, 1000 / 65535, 1.0]]))
    with pytest.raises(ValueError, match="16-bit data"):
        image_to_tensor(Image.fromarray(np.array([[70000]], dtype=np.int32), mode="I"))
    floats = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    torch.testing.assert_close(
        image_to_tensor(Image.fromarray(floats, mode="F"))[2], torch.tensor(floats)
    )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_to_tensor(Image.fromarray(floats * 255, mode="F"))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "P", "CMYK", "L", "1", "YCbCr", "RGBa"])
def test_modes_equal_transformers_convert_to_rgb(mode: str) -> None:
    """transformers' ``convert_to_rgb`` (transparency composited onto white) as reference."""
    from transformers.image_transforms import convert_to_rgb

    rgba = np.concatenate([_gradient(), _gradient()[..., :1]], -1)
    image = Image.fromarray(rgba, mode="RGBA").convert(mode)
    if mode == "P":
        image.info["transparency"] = 3
    # transformers misses premultiplied alpha ("a"): it gets the RGBA reading as reference.
    reference = image.convert("RGBA") if mode == "RGBa" else image
    expected = convert_to_rgb(reference, return_numpy=True).astype(np.float32)
    got = image_to_tensor(image).permute(1, 2, 0).numpy() * 255
    assert np.abs(got - expected).max() <= 1.0


def test_arrays_and_tensors_by_dtype() -> None:
    rgb = _gradient()
    expected = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(image_to_tensor(rgb), expected)
    torch.testing.assert_close(image_to_tensor(rgb.astype(np.uint16) * 257), expected)
    torch.testing.assert_close(image_to_tensor(rgb.astype(np.float32) / 255), expected)
    torch.testing.assert_close(image_to_tensor(torch.from_numpy(rgb).permute(2, 0, 1)), expected)
    u16 = torch.from_numpy(rgb.astype(np.int32) * 257).permute(2, 0, 1).to(torch.uint16)
    torch.testing.assert_close(image_to_tensor(u16), expected)
    grey = image_to_tensor(rgb[..., 0])
    assert grey.shape == (3, 24, 32) and torch.equal(grey[0], grey[2])
    for bad, match in [
        (torch.zeros(3, 4, 4, dtype=torch.int16), "int16 have no defined range"),
        (np.zeros((4, 4, 3), dtype=np.int64), "int64 have no defined range"),
        (np.zeros((4, 4, 3), dtype=bool), "bool have no defined range"),
    ]:
        with pytest.raises(TypeError, match=match):
            image_to_tensor(bad)
    with pytest.raises(ValueError, match=r"divide 0-255 pixels by 255"):
        image_to_tensor(torch.full((3, 4, 4), 200.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_to_tensor(torch.tensor(float("nan")).expand(3, 4, 4))
    with pytest.raises(ValueError, match=r"channels last"):
        image_to_tensor(np.zeros((3, 40, 40), np.uint8))


def test_predict_takes_one_image_or_a_list_of_any_kind(model, tmp_path: Path) -> None:
    rgb = _gradient()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    reference = model.predict(
        [torch.from_numpy(rgb).permute(2, 0, 1)], threshold=0.0, shortest_edge=64
    )
    for single in [
        Image.fromarray(rgb),
        str(tmp_path / "a.png"),
        tmp_path / "a.png",
        rgb,
        torch.from_numpy(rgb).permute(2, 0, 1).float() / 255,
        torch.from_numpy(rgb).permute(2, 0, 1)[None],  # a batch of one
    ]:
        got = model.predict(single, threshold=0.0, shortest_edge=64)
        assert isinstance(got, list) and len(got) == 1, type(single)
        _same(got, reference)
    (pred,) = reference
    assert pred["names"] == [f"thing{k}" for k in pred["labels"].tolist()]
    assert "names" not in tiny_model("ddetr").predict(rgb, threshold=0.0, shortest_edge=64)[0]


def test_predict_refuses_what_is_no_image_by_name(model) -> None:
    cases: list[tuple[object, type[Exception], str]] = [
        (None, TypeError, "images"),
        (42, TypeError, "images"),
        ([], ValueError, "got no image"),
        (torch.zeros(0, 3, 8, 8), ValueError, "got no image"),
        ([torch.rand(3, 8, 8), None], TypeError, r"images\[1\]"),
        (torch.zeros(3, 0, 0), ValueError, "empty"),
        (torch.zeros(4, 8, 8), ValueError, r"\(3, H, W\)"),
    ]
    for images, error, match in cases:
        with pytest.raises(error, match=match):
            model.predict(images)
    with pytest.raises(FileNotFoundError):
        model.predict("/nonexistent/picture.png")
    for kwargs, match in [
        ({"shortest_edge": 0}, "shortest_edge"),
        ({"shortest_edge": -5}, "shortest_edge"),
        ({"longest_edge": 0}, "longest_edge"),
        ({"threshold": 1.5}, "threshold"),
    ]:
        with pytest.raises(ValueError, match=match):
            model.predict(torch.rand(3, 8, 8), **kwargs)


@pytest.mark.parametrize("shape", [(1, 10000), (10000, 1), (1, 1)])
def test_predict_on_extreme_strips_keeps_boxes_inside(model, shape: tuple[int, int]) -> None:
    # 96: the tiny model's GroupNorm(32, 32) needs more than a 1 x 1 last level.
    (pred,) = model.predict(torch.rand(3, *shape), threshold=0.0, shortest_edge=96)
    h, w = shape
    assert len(pred["scores"]) > 0
    assert (pred["boxes"] >= 0).all()
    assert (pred["boxes"][:, 0::2] <= w).all() and (pred["boxes"][:, 1::2] <= h).all()


def test_the_training_loader_reads_16_bit_pngs_by_their_range(tmp_path: Path) -> None:
    """The dataset loader uses the one image reader: a 16-bit PNG is scaled by 65535, not
    clipped to 255 (the old ``convert("RGB")`` made it all white)."""
    from zoo.data import CocoDetection

    ramp = (np.arange(8 * 12, dtype=np.uint16).reshape(8, 12) * 600).astype(np.uint16)
    (tmp_path / "images").mkdir()
    Image.fromarray(ramp).save(tmp_path / "images" / "a.png")
    assert Image.open(tmp_path / "images" / "a.png").mode == "I;16"
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 12}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 1, 4, 4],
                "area": 16,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    dataset = CocoDetection(tmp_path / "images", tmp_path / "ann.json", transforms=None)
    image, _ = dataset.raw_sample(0)
    expected = torch.from_numpy(np.round(ramp / 65535.0 * 255).astype(np.uint8))
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 12)
    for channel in image:
        assert (channel.int() - expected.int()).abs().max() <= 1
