"""MobileNetV2 with output stride 8 (strides of the last two downsampling stages replaced by dilation 2 and 4,
as in CIRKD / mmseg `deeplabv3_m-v2-d8`). Module names follow torchvision's `features.N` layout."""
from __future__ import annotations

import torch
import torch.nn as nn

from lakd.models.layers import conv_bn_relu, init_weights, scale_channels, stem_channels

# expansion t, channels c, repeats n, stride s
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio, dilation=1):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu(inp, hidden, 1, act=nn.ReLU6))
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, dilation=dilation, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Returns `[c1, c2, c3, c4]` (24, 32, 96, 320 channels at width 1) at strides `[4, 8, 8, 8]`."""

    def __init__(self, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        c = lambda ch: scale_channels(ch, width)  # noqa: E731
        inp = stem_channels(32, width)  # the first conv carries the label channels too
        features: list[nn.Module] = [conv_bn_relu(in_channels, inp, 3, 2, act=nn.ReLU6)]
        stride_so_far, dilation = 2, 1
        for t, ch, n, s in SETTINGS:
            oup = c(ch)
            for i in range(n):
                stride = s if i == 0 else 1
                block_dilation = dilation
                if stride == 2 and stride_so_far >= 8:  # keep output stride 8: dilate instead of striding
                    stride = 1
                    block_dilation = dilation  # the first block keeps the previous dilation
                    dilation *= 2
                elif stride == 2:
                    stride_so_far *= 2
                features.append(InvertedResidual(inp, oup, stride, t, block_dilation if i == 0 else dilation))
                inp = oup
        self.features = nn.Sequential(*features)
        # indices after which c1..c4 are taken (torchvision numbering: 0 = stem, 1..17 = blocks)
        self.taps = [3, 6, 13, 17]
        self.out_channels = [c(24), c(32), c(96), c(320)]
        self.strides = [4, 8, 8, 8]
        self.first_conv = "features.0.0"
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
        return outs
