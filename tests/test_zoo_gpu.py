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


@pytest.mark.parametrize("name", zoo.list_variants())
def test_training_step_synchronises_once(name: str) -> None:
    """CUDA's own count (``set_sync_debug_mode``) agrees with tests/test_train_syncs.py:
    one synchronisation per step, the matcher's transfer of the step's costs."""
    import warnings

    from support.tiny import random_targets, tiny_model

    from zoo.loss.criterion import build_criterion
    from zoo.training.config import TrainConfig
    from zoo.training.optim import build_optimizer
    from zoo.training.step import training_step

    cuda = torch.device("cuda")
    model = tiny_model(name).train().to(cuda)
    criterion = build_criterion(model.config)
    optimizer = build_optimizer(model, TrainConfig())
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    pixels, mask = padded_batch(SIZES * 2)
    pixels, mask = pixels.float().to(cuda), mask.to(cuda)
    targets = [
        {"labels": t["labels"].to(cuda), "boxes": t["boxes"].float().to(cuda)}
        for t in random_targets(len(SIZES) * 2)
    ]

    def step() -> dict[str, torch.Tensor]:
        return training_step(
            model, criterion, optimizer, scaler, pixels, mask, targets, clip_max_norm=0.1
        )

    step()  # the first step builds kernels, the optimizer's state and the pinned buffers
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            losses = step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) == 1, syncs
    assert torch.isfinite(losses["loss"]).item()
