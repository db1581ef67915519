"""ResNet-18/50/101, "v1c" form (deep 3x3 stem, as CIRKD's `resnet*_v1s` and mmseg's `ResNetV1c`),
output stride 8 by dilating layer3 (d=2) and layer4 (d=4).

Module names follow the torchvision / CIRKD / mmseg block layout (`layer1.0.conv1`, `layer1.0.downsample.0`),
so weight files in those layouts map onto it with prefix renames only (see `lakd.models.weights`).
The first block of a dilated layer uses the previous dilation in its first 3x3 conv (CIRKD semantics).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from lakd.models.layers import init_weights, scale_channels, stem_channels

DEPTHS = {18: ("basic", [2, 2, 2, 2]), 50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3])}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, first_dilation=None, downsample=None):
        super().__init__()
        d1 = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, d1, dilation=d1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, first_dilation=None, downsample=None):
        super().__init__()
        d = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, d, dilation=d, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Returns `[c1, c2, c3, c4]` at strides `[4, 8, 8, 8]` (dilated) or `[4, 8, 16, 32]`."""

    def __init__(self, depth: int = 18, in_channels: int = 3, width: float = 1.0, deep_stem: bool = True,
                 dilated: bool = True, stem_width: int = 64):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"resnet depth {depth} is not one of {sorted(DEPTHS)}")
        kind, layers = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth, self.deep_stem = depth, deep_stem
        c = lambda ch: scale_channels(ch, width)  # noqa: E731
        if deep_stem:  # convs of stem_width, stem_width, 2 x stem_width: CIRKD 64-64-128, mmseg ResNetV1c 32-32-64
            w = int(stem_width)
            stem = stem_channels(w, width)  # the first conv carries the label channels too
            self.conv1 = nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            self.conv2 = nn.Conv2d(stem, stem, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(stem)
            self.conv3 = nn.Conv2d(stem, c(2 * w), 3, 1, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(c(2 * w))
            self.inplanes = c(2 * w)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_channels(64, width), 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem_channels(64, width))
            self.inplanes = stem_channels(64, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        d3, d4 = (2, 4) if dilated else (1, 1)
        self.layer1 = self._make_layer(block, c(64), layers[0])
        self.layer2 = self._make_layer(block, c(128), layers[1], stride=2)
        self.layer3 = self._make_layer(block, c(256), layers[2], stride=1 if dilated else 2, dilation=d3)
        self.layer4 = self._make_layer(block, c(512), layers[3], stride=1 if dilated else 2, dilation=d4)
        e = block.expansion
        self.out_channels = [c(64) * e, c(128) * e, c(256) * e, c(512) * e]
        self.strides = [4, 8, 8, 8] if dilated else [4, 8, 16, 32]
        self.first_conv = "conv1"
        init_weights(self)

    def _make_layer(self, block, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        first_dilation = max(1, dilation // 2)
        layers = [block(self.inplanes, planes, stride, dilation, first_dilation, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.deep_stem:
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]
