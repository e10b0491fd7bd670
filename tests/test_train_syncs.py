"""One host synchronisation per training step, for every registered variant.

The step (forward, criterion, backward, gradient clipping, optimizer) runs on the ``meta``
device under :class:`support.sync_count.SyncCounter`, which records every operation that
would make the host wait for a GPU. The budget is the matcher's one device->host transfer
of all the step's cost matrices (every decoder layer, the two-stage proposals, every
image). The GPU-day twin, with ``torch.cuda.set_sync_debug_mode``, is in test_zoo_gpu.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from support.sync_count import SyncCounter
from support.tiny import SIZES, padded_batch, random_targets, tiny_model

import zoo
from msda_ops import dispatch, ops
from zoo.loss.criterion import build_criterion
from zoo.training.config import TrainConfig
from zoo.training.optim import build_optimizer
from zoo.training.step import training_step

META = torch.device("meta")


@pytest.fixture
def kernel_on_meta(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The op's compiled-kernel path (what a GPU runs), through its registered fake on meta.

    ``auto`` would take the PyTorch reference on an unknown device, which reads the level
    sizes on the host; a GPU never runs it when a kernel is there.
    """
    if not ops.kernel_available("cpu"):
        pytest.skip("the msda_ops kernel library did not build here")
    monkeypatch.setattr(dispatch, "auto_backend", lambda device_type, half_or_float: "kernel")
    yield


def _meta_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    sizes = (SIZES * batch)[:batch]
    pixels, mask = padded_batch(sizes)
    targets = [
        {"labels": t["labels"].to(META), "boxes": t["boxes"].float().to(META)}
        for t in random_targets(batch)  # the last of 3 images has no target
    ]
    return pixels.float().to(META), mask.to(META), targets


def _step(name: str, counter: SyncCounter) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = tiny_model(name).train().to(META)
    criterion = build_criterion(model.config)
    optimizer = build_optimizer(model, TrainConfig())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    pixels, mask, targets = _meta_batch(3)
    with counter:
        losses = training_step(
            model, criterion, optimizer, scaler, pixels, mask, targets, clip_max_norm=0.1
        )
    return model, losses


@pytest.mark.parametrize("name", zoo.list_variants())
def test_one_synchronisation_per_training_step(name: str, kernel_on_meta: None) -> None:
    counter = SyncCounter()
    model, losses = _step(name, counter)
    kinds = [e.kind for e in counter.events]
    assert kinds == ["device->host"], counter.report()
    assert "matcher.py" in counter.events[0].stack, counter.report()
    # That one transfer held every matching: a loss set per decoder layer (+ proposals).
    config = model.config
    expected = config.dec_layers + int(getattr(config, "two_stage", False))
    assert sum(k.startswith("loss_giou") for k in losses) == expected
    assert all(v.device == META and not v.requires_grad for v in losses.values())


def _culprits() -> dict[str, Any]:
    t = torch.ones(3, device=META)
    return {
        "item": lambda: t[0].item(),
        "tolist": lambda: t.tolist(),
        "int": lambda: int(t[0]),
        "bool": lambda: bool(t[0] > 0),
        "nonzero": lambda: t.nonzero(),
        "mask": lambda: t[t > 0],
        "cpu": lambda: t.cpu(),
        "to-host": lambda: torch.empty(3).copy_(t),
        "tensor": lambda: torch.tensor([1, 2], device=META),
        "blocking-to": lambda: torch.ones(2).to(META),
    }


@pytest.mark.parametrize("culprit", sorted(_culprits()))
def test_the_counter_sees_each_kind_of_synchronisation(culprit: str) -> None:
    fn = _culprits()[culprit]
    counter = SyncCounter()
    with counter:
        try:
            fn()
        except (RuntimeError, NotImplementedError):
            pass  # a meta tensor cannot give data: the op was seen before it failed
    assert len(counter.events) >= 1, culprit


def test_the_counter_passes_asynchronous_work() -> None:
    counter = SyncCounter()
    with counter:
        t = torch.ones(3, device=META)
        (t * 2).sum().clamp_min(1)
        torch.full((), 4.0, device=META)
        torch.ones(2).to(META, non_blocking=True)
        torch.topk(t, 2)
    assert counter.events == [], counter.report()
