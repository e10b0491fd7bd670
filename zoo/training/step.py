"""One training step, built for the GPU: nothing in it reads a value on the host.

The matcher's single transfer of the step's cost matrices is its only synchronisation
(``tests/test_train_syncs.py`` counts them for every variant); the losses come back on
the device, and the training loop reads them every ``log_every`` steps
(:func:`mean_over_processes`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

Criterion = Callable[[dict[str, Any], list[dict[str, Tensor]]], dict[str, Tensor]]

__all__ = ["Criterion", "mean_over_processes", "training_step"]


def _to_float(outputs: Any) -> Any:
    """Model outputs (nested dicts/lists) in float32: the matcher and losses need full precision."""
    if isinstance(outputs, Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {k: _to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [_to_float(v) for v in outputs]
    return outputs


def mean_over_processes(losses: dict[str, Tensor], steps: int = 1) -> dict[str, float]:
    """Loss sums over ``steps`` steps -> their means, averaged over processes: the one place
    the training loop reads values on the host (every ``log_every`` steps)."""
    names = sorted(losses)
    values = torch.stack([losses[n].float() for n in names]) / steps
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return dict(zip(names, values.tolist(), strict=True))


def training_step(
    model: nn.Module,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    pixel_values: Tensor,
    pixel_mask: Tensor,
    targets: list[dict[str, Tensor]],
    *,
    amp_dtype: torch.dtype | None = None,
    clip_max_norm: float = 0.0,
) -> dict[str, Tensor]:
    """One optimizer step; returns the losses, detached, on the device.

    Nothing here reads a value on the host: the matcher's single transfer of the step's
    cost matrices is the only synchronisation (tests/test_train_syncs.py counts them).

    Args:
        pixel_values: (N, 3, H, W); pixel_mask: (N, H, W), 1 on real pixels.
        targets: per image ``labels`` (T_i,) and ``boxes`` (T_i, 4) normalised cxcywh.
        amp_dtype: autocast dtype of the forward, or None (full precision).
        clip_max_norm: clip the gradients' total norm to this (0: no clipping).
    """
    autocast = (
        torch.autocast(pixel_values.device.type, amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        outputs = model(pixel_values, pixel_mask)
    losses = criterion(_to_float(outputs), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["loss"]).backward()
    if clip_max_norm > 0:
        # Clip the true gradients: unscale first when fp16 scaling is on.
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
    scaler.step(optimizer)
    scaler.update()
    return {name: value.detach() for name, value in losses.items()}
