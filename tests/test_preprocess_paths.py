"""One preprocessing rule: the evaluation transform, ``preprocess`` (``predict``, ``zoo detect``)
and the ONNX runner's preprocessing give the same tensor, size and values, for every image
size; the resize rule itself against the official transform's arithmetic, written out here."""

from __future__ import annotations

import random

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision import tv_tensors

from zoo.data import ResizeRecipe, eval_transforms
from zoo.models.pipeline.preprocess import preprocess
from zoo.models.pipeline.resize import inference_size, resized_size

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _official_size(h: int, w: int, size: int, max_size: int) -> tuple[int, int]:
    # DETR's datasets/transforms.py get_size_with_aspect_ratio, transcribed.
    min_original, max_original = float(min(w, h)), float(max(w, h))
    if max_original / min_original * size > max_size:
        size = int(round(max_size * min_original / max_original))  # noqa: RUF046  (as written there)
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def _sizes(count: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(8, 300), rng.randint(8, 300)) for _ in range(count)]


@pytest.mark.parametrize("image_size", [32, 64, 128, 400, 800])
def test_eval_recipe_caps_like_inference(image_size: int) -> None:
    recipe = ResizeRecipe.for_image_size(image_size)
    assert (max(recipe.scales), recipe.max_size) == inference_size(image_size)


def test_resized_size_is_the_official_rule() -> None:
    for h, w in _sizes(400, seed=0):
        for size in (48, 800):
            assert resized_size(h, w, size, round(size * 1333 / 800)) == _official_size(
                h, w, size, round(size * 1333 / 800)
            ), (h, w, size)


@pytest.mark.parametrize("image_size", [48, 96])
def test_eval_transform_equals_preprocess_on_every_size(image_size: int) -> None:
    transform = eval_transforms(ResizeRecipe.for_image_size(image_size), MEAN, STD)
    shortest, longest = inference_size(image_size)
    gen = torch.Generator().manual_seed(image_size)
    for h, w in _sizes(60, seed=image_size):
        pixels = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
        boxes = tv_tensors.BoundingBoxes(
            [[1.0, 1.0, w - 1.0, h - 1.0]], format="XYXY", canvas_size=(h, w)
        )
        got, target = transform(
            tv_tensors.Image(pixels), {"boxes": boxes, "labels": torch.zeros(1)}
        )
        want = preprocess(
            TF.to_pil_image(pixels), shortest, longest, mean=MEAN, std=STD
        ).pixel_values[0]
        assert got.shape == want.shape, (h, w)
        assert torch.equal(got.as_subclass(torch.Tensor), want), (h, w)
        # Boxes move with the pixels: the full-image box spans the resized image.
        rh, rw = want.shape[-2:]
        expected = torch.tensor([[rw / w, rh / h, (w - 1) * rw / w, (h - 1) * rh / h]])
        torch.testing.assert_close(target["boxes"].float(), expected, atol=1e-3, rtol=0)


def test_edges_for_a_model_and_an_exported_model() -> None:
    from types import SimpleNamespace

    from zoo.models.pipeline.preprocess import edges_for

    model = SimpleNamespace(image_size=800)
    # The official pair, the ratio kept for another shorter side, a given cap winning.
    assert edges_for(model) == (800, 1333)
    assert edges_for(model, 400) == (400, 666)  # round(400 * 1333 / 800) = 666.5 -> 666
    assert edges_for(model, 400, 500) == (400, 500)
    # An exported model records its own cap; it holds only for its own shorter side.
    exported = SimpleNamespace(image_size=64, longest_edge=90)
    assert edges_for(exported) == (64, 90)
    assert edges_for(exported, 64) == (64, 107)
    for bad in ("x", 0, True, 2.5):
        with pytest.raises(ValueError, match="shortest_edge must be a positive int"):
            edges_for(model, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="longest_edge must be a positive int"):
        edges_for(model, 400, -1)


def test_preprocess_for_uses_the_models_size_and_normalisation() -> None:
    from types import SimpleNamespace

    from zoo.models.pipeline.preprocess import preprocess_for

    config = SimpleNamespace(image_size=48, image_mean=(0.1, 0.2, 0.3), image_std=(0.5, 0.6, 0.7))
    image = torch.rand(3, 30, 90, generator=torch.Generator().manual_seed(0))
    got = preprocess_for(config, [image])
    want = preprocess([image], 48, 80, mean=config.image_mean, std=config.image_std)
    # The cap binds (48 x 144 would pass 80): shorter side round(80 * 30 / 90) = 27.
    assert got.pixel_values.shape == (1, 3, 27, 81)
    torch.testing.assert_close(got.pixel_values, want.pixel_values, rtol=0, atol=0)
    assert got.original_sizes.tolist() == [[30, 90]]
