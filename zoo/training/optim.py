"""Optimizer and learning-rate schedule of the official recipe, with its parameter groups."""

from __future__ import annotations

import torch
from torch import nn

from zoo.training.config import TrainConfig


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Trainable parameters in three groups: main (``lr``), backbone (``lr_backbone``) and
    slow (``slow_lr_mult * lr``: names containing one of ``config.slow_names``).

    The official code matches by name the same way; deformable attention's offsets and
    reference points diverge when trained at the full rate.
    """
    main, backbone, slow = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("backbone."):
            backbone.append(param)
        elif any(key in name for key in config.slow_names):
            slow.append(param)
        else:
            main.append(param)
    groups = [
        {"params": main, "lr": config.lr, "name": "main"},
        {"params": backbone, "lr": config.lr_backbone, "name": "backbone"},
        {"params": slow, "lr": config.lr * config.slow_lr_mult, "name": "slow"},
    ]
    # Empty groups are kept out: their presence would change the optimizer's state layout
    # between a model with and one without a trainable backbone.
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` with ``config.weight_decay``."""
    return torch.optim.AdamW(
        param_groups(model, config), lr=config.lr, weight_decay=config.weight_decay
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.StepLR:
    """Multiply every group's rate by ``lr_gamma`` every ``lr_drop`` epochs (stepped per epoch)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, config.lr_drop, gamma=config.lr_gamma)
