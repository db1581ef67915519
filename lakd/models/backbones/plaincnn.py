"""PlainCNN: five conv-BN-ReLU layers (strides 2, 2, 2, then dilations 2 and 4), output stride 8.

A small backbone for CPU demos and tests, not one of the paper's: the demo (`lakd demo`) trains it in a minute
per stage on a laptop core, and at that budget it is the backbone on which a label-assisted teacher measurably
uses its label (docs/method.md section 6: STDC1 and DeepLabV3-ResNet18 at width 1/4-1/8 did not). It has no
ImageNet weights.

Initialisation is PyTorch's default (Kaiming-uniform with a = sqrt(5), fan-in), not the Kaiming-normal fan-out of
`lakd.models.layers.init_weights` that the paper backbones use: with the latter, the same network's
label-assisted teacher used its label far less in the measured runs (docs/method.md section 6).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from lakd.models.layers import conv_bn_relu, scale_channels, stem_channels


class PlainCNN(nn.Module):
    """Returns `[c1, c2, c3, c4]` at strides `[2, 4, 8, 8]` (64, 128, 256, 256 channels at width 1)."""

    def __init__(self, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        c1, c2, c3 = stem_channels(64, width), scale_channels(128, width), scale_channels(256, width)
        self.layers = nn.ModuleList([
            conv_bn_relu(in_channels, c1, 3, 2),
            conv_bn_relu(c1, c2, 3, 2),
            conv_bn_relu(c2, c3, 3, 2),
            nn.Sequential(conv_bn_relu(c3, c3, 3, dilation=2), conv_bn_relu(c3, c3, 3, dilation=4)),
        ])
        self.out_channels = [c1, c2, c3, c3]
        self.strides = [2, 4, 8, 8]
        self.first_conv = "layers.0.0"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs
