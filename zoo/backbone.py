"""ResNet backbone with frozen batch norm, returning the chosen stages and their masks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from zoo.config import BackboneConfig

# Output channels of layer1..layer4 per ResNet depth.
_STAGE_CHANNELS = {
    18: (64, 128, 256, 512),
    34: (64, 128, 256, 512),
    50: (256, 512, 1024, 2048),
    101: (256, 512, 1024, 2048),
}
_STAGE_STRIDES = (4, 8, 16, 32)


class ResNetBody(nn.Module):
    """The convolutional trunk of a torchvision ResNet (no pooling head).

    Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` ...),
    which are also timm's, so checkpoints of either map one to one.
    """

    def __init__(self, depth: int, dilation: bool = False) -> None:
        super().__init__()
        factory = getattr(torchvision.models, f"resnet{depth}")
        kwargs: dict = {"weights": None, "norm_layer": FrozenBatchNorm2d}
        if dilation:
            if depth < 50:
                raise ValueError("dilation needs a bottleneck ResNet (depth 50 or 101)")
            kwargs["replace_stride_with_dilation"] = [False, False, True]
        net = factory(**kwargs)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4

    def forward(self, x: Tensor) -> list[Tensor]:
        """(N, 3, H, W) -> the four stage outputs C2..C5."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            outs.append(x)
        return outs


class Backbone(nn.Module):
    """A ResNet returning stages ``return_stages`` (1-based: 4 is C5) with padding masks.

    Attributes:
        num_channels: channels of each returned stage.
        strides: stride of each returned stage with respect to the input.
    """

    def __init__(self, config: BackboneConfig, return_stages: Sequence[int] = (4,)) -> None:
        super().__init__()
        if not all(1 <= s <= 4 for s in return_stages):
            raise ValueError(f"return_stages must be within 1..4, got {return_stages}")
        self.body = ResNetBody(config.depth, config.dilation)
        self.return_stages = tuple(return_stages)
        self.num_channels = [_STAGE_CHANNELS[config.depth][s - 1] for s in self.return_stages]
        strides = list(_STAGE_STRIDES)
        if config.dilation:
            strides[3] = 16
        self.strides = [strides[s - 1] for s in self.return_stages]
        for name, param in self.body.named_parameters():
            # The official recipes never train the stem and the first stage.
            trainable = config.train_backbone and name.startswith(("layer2", "layer3", "layer4"))
            param.requires_grad_(trainable)

    def forward(self, images: Tensor, padding_mask: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Feature maps and their padding masks.

        Args:
            images: (N, 3, H, W) normalised images.
            padding_mask: (N, H, W) bool, True on padding.

        Returns:
            One ``(features (N, C_s, H_s, W_s), mask (N, H_s, W_s) bool True=pad)`` per
            returned stage.
        """
        stages = self.body(images)
        return [
            (stages[s - 1], downsample_mask(padding_mask, stages[s - 1].shape[-2:]))
            for s in self.return_stages
        ]


def downsample_mask(padding_mask: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of an (N, H, W) bool mask to ``size`` (as the official code)."""
    resized = F.interpolate(padding_mask[None].to(torch.float32), size=tuple(size))
    return resized.to(torch.bool)[0]
