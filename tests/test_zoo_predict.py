"""Pre- and post-processing against transformers' image processors, and ``model.predict``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from support.tiny import NUM_CLASSES, NUM_QUERIES, TINY
from support.transformers_models import build_hf

import zoo
from zoo.models.config import IMAGENET_MEAN, IMAGENET_STD
from zoo.models.pipeline.postprocess import postprocess_softmax, postprocess_topk
from zoo.models.pipeline.preprocess import preprocess
from zoo.models.pipeline.resize import resized_size
from zoo.weights.transformers_format import load_transformers_folder

transformers = pytest.importorskip("transformers")


def test_resized_size_follows_the_official_transform() -> None:
    assert resized_size(480, 640, 800, 1333) == (800, 1066)
    assert resized_size(800, 1200, 800, 1333) == (800, 1200)  # already there
    assert resized_size(100, 400, 800, 1333) == (333, 1332)  # capped by the long side
    # The official transform rounds the capped short side first (transformers keeps
    # the unrounded value and gets 1332 here).
    assert resized_size(300, 160, 800, 1333) == (1333, 711)


def test_preprocess_equals_transformers_on_tensors() -> None:
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 120, 200, generator=gen), torch.rand(3, 150, 100, generator=gen)]
    hf = transformers.DetrImageProcessor()(images=images, return_tensors="pt", do_rescale=False)
    ours = preprocess(images, 800, 1333, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    torch.testing.assert_close(ours.pixel_values, hf["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(ours.pixel_mask, hf["pixel_mask"].bool())
    assert ours.original_sizes.tolist() == [[120, 200], [150, 100]]


def _raw_outputs(columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(2, 30, columns, generator=gen)
    boxes = torch.cat(
        [
            0.2 + 0.6 * torch.rand(2, 30, 2, generator=gen),
            0.3 * torch.rand(2, 30, 2, generator=gen),
        ],
        -1,
    )
    return logits, boxes


@pytest.mark.parametrize("deformable", [False, True])
def test_postprocess_equals_transformers(deformable: bool) -> None:
    logits, boxes = _raw_outputs(NUM_CLASSES + (0 if deformable else 1))
    sizes = torch.tensor([[480, 640], [333, 500]])
    if deformable:
        processor = transformers.DeformableDetrImageProcessor()
        ours = postprocess_topk({"pred_logits": logits, "pred_boxes": boxes}, sizes, 0.3, k=40)
        hf = processor.post_process_object_detection(
            SimpleNamespace(logits=logits, pred_boxes=boxes), 0.3, sizes, top_k=40
        )
    else:
        processor = transformers.DetrImageProcessor()
        ours = postprocess_softmax({"pred_logits": logits, "pred_boxes": boxes}, sizes, 0.3)
        hf = processor.post_process_object_detection(
            SimpleNamespace(logits=logits, pred_boxes=boxes), 0.3, sizes
        )
    for o, h in zip(ours, hf, strict=True):
        assert len(o["scores"]) > 0
        torch.testing.assert_close(o["scores"], h["scores"])
        assert torch.equal(o["labels"], h["labels"])
        torch.testing.assert_close(o["boxes"], h["boxes"])


@pytest.mark.parametrize("name", ["detr-r50", "ddetr-two-stage"])
def test_predict_on_images_of_any_size(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(
        name, **{**TINY, "num_classes": NUM_CLASSES, "num_queries": NUM_QUERIES}
    )
    gen = torch.Generator().manual_seed(0)
    tensor_image = torch.rand(3, 50, 70, generator=gen)
    pil_image = Image.fromarray((torch.rand(60, 40, 3, generator=gen) * 255).byte().numpy())
    results = model.predict(
        [tensor_image, pil_image], threshold=0.0, shortest_edge=64, longest_edge=96
    )
    assert model.training  # predict restores the mode
    assert len(results) == 2
    for result, (h, w) in zip(results, [(50, 70), (60, 40)], strict=True):
        assert result["boxes"].shape[1] == 4
        assert len(result["boxes"]) == len(result["scores"]) == len(result["labels"]) > 0
        assert (result["labels"] < NUM_CLASSES).all()
        # Boxes are in pixels of the original image (predicted boxes lie within it).
        assert result["boxes"][:, 0::2].max() <= w + 1e-4
        assert result["boxes"][:, 1::2].max() <= h + 1e-4


@pytest.mark.parametrize("name", ["detr", "ddetr-two-stage"])
def test_predict_equals_the_transformers_pipeline(name: str, tmp_path: Path) -> None:
    """``predict`` = transformers' image processor, model and post-processor, on the same
    random weights (an implementation written independently of the zoo's)."""
    hf = build_hf(name, seed=5).double()
    hf.save_pretrained(tmp_path)
    ours = load_transformers_folder(tmp_path, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 50, 70, generator=gen), torch.rand(3, 60, 40, generator=gen)]
    got = ours.predict(images, threshold=0.0, shortest_edge=64, longest_edge=96)

    deformable = name != "detr"
    processor = (
        transformers.DeformableDetrImageProcessor if deformable else transformers.DetrImageProcessor
    )(size={"shortest_edge": 64, "longest_edge": 96})
    inputs = processor(images=images, return_tensors="pt", do_rescale=False)
    with torch.no_grad():
        raw = hf(pixel_values=inputs["pixel_values"].double(), pixel_mask=inputs["pixel_mask"])
    sizes = [(50, 70), (60, 40)]
    extra = {"top_k": 100} if deformable else {}
    expected = processor.post_process_object_detection(raw, 0.0, sizes, **extra)
    for g, e, (h, w) in zip(got, expected, sizes, strict=True):
        assert len(g["scores"]) == len(e["scores"]) > 0
        torch.testing.assert_close(g["scores"], e["scores"], atol=1e-5, rtol=0)
        assert torch.equal(g["labels"], e["labels"])
        # predict clips boxes to the image; transformers does not.
        limit = torch.tensor([w, h, w, h], dtype=e["boxes"].dtype)
        clipped = torch.minimum(e["boxes"].clamp(min=0), limit)
        torch.testing.assert_close(g["boxes"], clipped, atol=1e-3, rtol=0)


def test_predict_resizes_to_the_configured_image_size() -> None:
    """``predict`` sees images at ``config.image_size`` (longer side capped at 1333/800 of it)."""
    model = zoo.create_model("ddetr", **{**TINY, "num_classes": NUM_CLASSES, "image_size": 96})
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    model.predict([torch.rand(3, 40, 60)], threshold=0.0)
    model.predict([torch.rand(3, 40, 400)], threshold=0.0)
    model.predict([torch.rand(3, 40, 60)], threshold=0.0, shortest_edge=64)
    # 40x60 -> 96x144; 40x400 -> capped at round(96 * 1333 / 800) = 160 wide.
    assert seen == [(1, 3, 96, 144), (1, 3, 16, 160), (1, 3, 64, 96)]
