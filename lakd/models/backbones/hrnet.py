"""HRNetV2-W18 (Wang et al., "Deep high-resolution representation learning", TPAMI 2020), as mmseg's `HRNet`
with the `hr18` settings; module names follow mmseg / the official HRNet so their weights map directly.

Returns the four branches `[1/4, 1/8, 1/16, 1/32]` plus their concatenation (HRNetV2 representation,
18+36+72+144 = 270 channels at width 1) resized to `concat_stride` (8 by default, so that every lakd model
predicts at output stride 8; `concat_stride=4` is mmseg's setting).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd.models.backbones.resnet import BasicBlock, Bottleneck
from lakd.models.layers import conv_bn_relu, init_weights, scale_channels, stem_channels

# (num_modules, num_blocks per branch, channels per branch at W18)
STAGES = [(1, (4, 4), (18, 36)), (4, (4, 4, 4), (18, 36, 72)), (3, (4, 4, 4, 4), (18, 36, 72, 144))]


def _basic_branch(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*[BasicBlock(channels, channels) for _ in range(blocks)])


class HRModule(nn.Module):
    """Parallel branches of BasicBlocks followed by all-to-all multi-resolution fusion."""

    def __init__(self, channels: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList([_basic_branch(c, b) for c, b in zip(channels, blocks)])
        self.fuse_layers = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:  # lower resolution -> 1x1 conv + BN, then upsample in forward
                    row.append(conv_bn_relu(channels[j], channels[i], 1, act=None))
                elif j == i:
                    row.append(nn.Identity())
                else:  # higher resolution -> (i - j) stride-2 3x3 convs
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        steps.append(conv_bn_relu(channels[j], channels[i] if last else channels[j], 3, 2,
                                                  act=None if last else nn.ReLU))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        outs = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                z = layer(xs[j])
                if j > i:
                    z = F.interpolate(z, size=xs[i].shape[-2:], mode="bilinear", align_corners=False)
                y = y + z
            outs.append(self.relu(y))
        return outs


class HRNetV2(nn.Module):
    def __init__(self, base: int = 18, in_channels: int = 3, width: float = 1.0, concat_stride: int = 8):
        super().__init__()
        if base != 18:
            raise ValueError(f"only HRNetV2-W18 is provided, got W{base}")
        if concat_stride not in (4, 8):
            raise ValueError(f"hrnetv2_w18 concat_stride must be 4 or 8, got {concat_stride!r}")
        c = lambda ch: scale_channels(ch, width)  # noqa: E731
        stem = stem_channels(64, width)  # the first conv carries the label channels too
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        planes = c(64)
        self.layer1 = nn.Sequential(
            Bottleneck(stem, planes, downsample=nn.Sequential(nn.Conv2d(stem, planes * 4, 1, bias=False),
                                                              nn.BatchNorm2d(planes * 4))),
            *[Bottleneck(planes * 4, planes) for _ in range(3)],
        )
        prev = [planes * 4]
        for s, (num_modules, blocks, chans) in enumerate(STAGES, start=1):
            chans = tuple(c(ch) for ch in chans)
            setattr(self, f"transition{s}", self._transition(prev, list(chans)))
            setattr(self, f"stage{s + 1}", nn.Sequential(*[HRModule(chans, blocks) for _ in range(num_modules)]))
            prev = list(chans)
        self.concat_stride = concat_stride
        self.out_channels = prev + [sum(prev)]
        self.strides = [4, 8, 16, 32, concat_stride]
        self.first_conv = "conv1"
        init_weights(self)

    @staticmethod
    def _transition(prev: list[int], cur: list[int]) -> nn.ModuleList:
        layers = nn.ModuleList()
        for i, ch in enumerate(cur):
            if i < len(prev):
                layers.append(conv_bn_relu(prev[i], ch, 3) if ch != prev[i] else nn.Identity())
            else:  # a new, lower-resolution branch made from the last one
                steps = [conv_bn_relu(prev[-1], ch if k == i - len(prev) else prev[-1], 3, 2)
                         for k in range(i + 1 - len(prev))]
                layers.append(nn.Sequential(*steps))
        return layers

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for s in range(1, 4):
            transition = getattr(self, f"transition{s}")
            xs = [t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)]
            xs = getattr(self, f"stage{s + 1}")(xs)
        size = xs[0 if self.concat_stride == 4 else 1].shape[-2:]
        cat = torch.cat([t if t.shape[-2:] == size else
                         F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in xs], dim=1)
        return [*xs, cat]
