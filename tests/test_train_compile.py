"""``zoo train --compile``: the compiled training step gives the eager losses and gradients.

The transformer parts compile with ``fullgraph=True`` (a graph break raises); the backend
is ``aot_eager`` (dynamo capture and AOT autograd, the parts that can break, without the
minutes of C++ code generation inductor needs on this machine).
"""

from __future__ import annotations

import copy

import pytest
import torch
from support.tiny import SIZES, padded_batch, random_targets, tiny_model

from zoo.loss.criterion import build_criterion
from zoo.training.compile import compile_for_training, fullgraph_parts, pad_to_bucket


@pytest.mark.slow
@pytest.mark.parametrize("name", ["detr-r50", "ddetr-two-stage"])
def test_compiled_step_equals_eager(name: str) -> None:
    torch._dynamo.reset()
    eager = tiny_model(name, dropout=0.0).train()  # no dropout: the same function both ways
    compiled = copy.deepcopy(eager)
    criterion = build_criterion(eager.config)
    compiled_criterion = build_criterion(compiled.config)
    compile_for_training(compiled, compiled_criterion, backend="aot_eager")
    pixels, mask = padded_batch(SIZES)
    pixels = pixels.float()
    targets = [
        {"labels": t["labels"], "boxes": t["boxes"].float()} for t in random_targets(len(SIZES))
    ]
    results = []
    for model, crit in ((eager, criterion), (compiled, compiled_criterion)):
        losses = crit(model(pixels, mask), targets)
        losses["loss"].backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append(({k: v.detach() for k, v in losses.items()}, grads))
    (want_losses, want_grads), (got_losses, got_grads) = results
    assert got_losses.keys() == want_losses.keys()
    for key in want_losses:
        torch.testing.assert_close(got_losses[key], want_losses[key], rtol=1e-5, atol=1e-6)
    assert got_grads.keys() == want_grads.keys()
    for key in want_grads:
        torch.testing.assert_close(got_grads[key], want_grads[key], rtol=1e-4, atol=1e-6)
    # Compiled in place: the names (checkpoints, optimizer groups) are the eager ones.
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in eager.named_parameters()]
    assert all(part._compiled_call_impl is not None for part in fullgraph_parts(compiled).values())


def test_fullgraph_parts_are_the_transformer() -> None:
    assert set(fullgraph_parts(tiny_model("detr-r50"))) == {"transformer"}
    assert set(fullgraph_parts(tiny_model("ddetr"))) == {"encoder", "decoder"}
    with pytest.raises(TypeError, match="not a zoo detector"):
        fullgraph_parts(torch.nn.Linear(2, 2))


def test_pad_to_bucket() -> None:
    pixels, mask = padded_batch([(64, 96), (80, 56)])  # batch (80, 96)
    got_pixels, got_mask = pad_to_bucket(pixels, mask, 64)
    assert got_pixels.shape == (2, 3, 128, 128) and got_mask.shape == (2, 128, 128)
    assert torch.equal(got_pixels[..., :80, :96], pixels)
    assert torch.equal(got_mask[:, :80, :96], mask)
    assert not got_pixels[..., 80:, :].any() and not got_mask[..., 96:].any()
    # Already a multiple: unchanged; 32-pixel buckets keep 80 x 96.
    assert pad_to_bucket(got_pixels, got_mask, 64)[0] is got_pixels
    assert pad_to_bucket(pixels, mask, 16)[0].shape[-2:] == (80, 96)
    with pytest.raises(ValueError, match="bucket must be a positive int"):
        pad_to_bucket(pixels, mask, 0)
