"""ResNet backbone with frozen batch norm, returning the chosen stages and their masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1
from torchvision.ops.misc import FrozenBatchNorm2d

from zoo.models.config import BackboneConfig

# Output channels of layer1..layer4 per ResNet depth.
_STAGE_CHANNELS = {
    18: (64, 128, 256, 512),
    34: (64, 128, 256, 512),
    50: (256, 512, 1024, 2048),
    101: (256, 512, 1024, 2048),
}
_STAGE_STRIDES = (4, 8, 16, 32)
_BASIC_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
NormFactory = Callable[[int], nn.Module]


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, channels)


def _dilated_conv3x3(conv: nn.Conv2d, dilation: int) -> nn.Conv2d:
    """A stride-1 3x3 convolution like ``conv`` at ``dilation`` (padding keeps the size)."""
    return nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=3,
        padding=dilation,
        dilation=dilation,
        bias=False,
    )


def _basic_stage(
    inplanes: int, planes: int, blocks: int, stride: int, norm: NormFactory, dilate: bool = False
) -> nn.Sequential:
    """A stage of basic blocks as torchvision builds it (same parameter names).

    ``dilate`` replaces the stage's stride by a dilation of ``stride``, as timm's
    ``output_stride=16`` does (what transformers builds for DC5): the first block's first
    convolution stays undilated at stride 1, every later 3x3 convolution is dilated.
    torchvision's ``BasicBlock`` refuses dilation, so the convolutions are swapped here;
    their weights keep their shape and name, so an undilated checkpoint loads.
    """
    dilation = 1
    if dilate:
        dilation, stride = stride, 1
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(conv1x1(inplanes, planes, stride), norm(planes))
    layers = [BasicBlock(inplanes, planes, stride, downsample, norm_layer=norm)]
    layers += [BasicBlock(planes, planes, norm_layer=norm) for _ in range(blocks - 1)]
    if dilation > 1:
        for k, block in enumerate(layers):
            if k > 0:
                block.conv1 = _dilated_conv3x3(block.conv1, dilation)
            block.conv2 = _dilated_conv3x3(block.conv2, dilation)
    return nn.Sequential(*layers)


class ResNetBody(nn.Module):
    """The convolutional trunk of a torchvision ResNet (no pooling head).

    Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` ...),
    which are also timm's, so checkpoints of either map one to one. ``width`` other than
    64 or ``norm="group"`` builds the same trunk from torchvision's basic blocks with
    scaled channels and GroupNorm (see :class:`zoo.models.config.BackboneConfig`).
    ``dilation`` (DC5) replaces the last stage's stride by a dilation: C5 at stride 16;
    torchvision's option for bottleneck ResNets, :func:`_basic_stage`'s for basic-block ones.
    """

    def __init__(
        self, depth: int, dilation: bool = False, width: int = 64, norm: str = "frozen_bn"
    ) -> None:
        super().__init__()
        if width != 64 or norm != "frozen_bn" or (dilation and depth in _BASIC_BLOCKS):
            self._build_scaled(depth, width, norm, dilation)
            return
        factory = getattr(torchvision.models, f"resnet{depth}")
        kwargs: dict = {"weights": None, "norm_layer": FrozenBatchNorm2d}
        if dilation:
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

    def _build_scaled(self, depth: int, width: int, norm_name: str, dilation: bool) -> None:
        if depth not in _BASIC_BLOCKS:
            raise ValueError(f"a scaled or group-norm ResNet needs depth 18 or 34, got {depth}")
        norm: NormFactory = _group_norm if norm_name == "group" else FrozenBatchNorm2d
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        planes = [width, 2 * width, 4 * width, 8 * width]
        inplanes = width
        for i, (p, blocks) in enumerate(zip(planes, _BASIC_BLOCKS[depth], strict=True)):
            stage = _basic_stage(
                inplanes, p, blocks, 1 if i == 0 else 2, norm, dilate=dilation and i == 3
            )
            setattr(self, f"layer{i + 1}", stage)
            inplanes = p
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, BasicBlock) and isinstance(m.bn2, nn.GroupNorm):
                # From scratch: each residual block starts as the identity (Goyal et al.).
                nn.init.zeros_(m.bn2.weight)

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
        self.body = ResNetBody(config.depth, config.dilation, config.width, config.norm)
        self.return_stages = tuple(return_stages)
        scale = config.width / 64
        self.num_channels = [
            int(_STAGE_CHANNELS[config.depth][s - 1] * scale) for s in self.return_stages
        ]
        strides = list(_STAGE_STRIDES)
        if config.dilation:
            strides[3] = 16
        self.strides = [strides[s - 1] for s in self.return_stages]
        for name, param in self.body.named_parameters():
            # The official recipes never train the (pretrained) stem and first stage; a
            # group-norm trunk is trained from scratch, all of it.
            from_scratch = config.norm == "group"
            trainable = config.train_backbone and (
                from_scratch or name.startswith(("layer2", "layer3", "layer4"))
            )
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
