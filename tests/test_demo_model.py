"""The bundled demo model (zoo/pretrained/shapes-ddetr) still detects shapes: COCO AP50 on fresh images.

The images come from a seed the model never trained or was validated on (``make
demo-model`` uses seed 0), and pycocotools scores them against the generator's own
annotations. The full 500-image validation figure is in README.md (``zoo eval``); this
is a 48-image regression check with a little slack for the smaller sample.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import DataLoader

import zoo
from zoo.data import CocoDetection, ResizeRecipe, collate, eval_transforms
from zoo.data.coco_eval import evaluate
from zoo.data.shapes import CLASSES, generate

BUNDLED = Path(__file__).resolve().parents[1] / "zoo" / "pretrained" / "shapes-ddetr"


@pytest.mark.skipif(not (BUNDLED / "model.safetensors").is_file(), reason="not trained yet")
def test_bundled_model_detects_fresh_shapes(tmp_path: Path) -> None:
    model = zoo.load(BUNDLED).eval()
    config = model.config
    assert config.class_names == CLASSES
    data = generate(tmp_path / "shapes", 0, 48, size=config.image_size, seed=2026)
    recipe = ResizeRecipe.for_image_size(config.image_size)
    dataset = CocoDetection(
        data / "val", data / "annotations" / "val.json", eval_transforms(recipe), len(CLASSES)
    )
    loader = DataLoader(dataset, batch_size=16, collate_fn=collate)
    metrics = evaluate(model, loader, dataset.coco, dataset.label_to_category)
    assert metrics["AP50"] >= 0.85, metrics
