"""The zoo's detectors on CUDA (the msda_ops CUDA kernel) equal their CPU results."""

from __future__ import annotations

import pytest
import torch
from support.tiny import NUM_CLASSES, NUM_QUERIES, SIZES, TINY, padded_batch, randomize_

import zoo

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", ["detr-r50", "ddetr", "ddetr-refine", "ddetr-two-stage"])
def test_cuda_equals_cpu(name: str) -> None:
    torch.manual_seed(0)
    sizes = {**TINY, "num_classes": NUM_CLASSES, "num_queries": NUM_QUERIES}
    model = zoo.create_model(name, **sizes).double().eval()
    randomize_(model)
    pixels, mask = padded_batch(SIZES)
    with torch.no_grad():
        cpu = model(pixels, mask)
        gpu = model.cuda()(pixels.cuda(), mask.cuda())
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], atol=1e-8, rtol=0)
