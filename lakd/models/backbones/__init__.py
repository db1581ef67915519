"""Backbones. Each returns a list of feature maps; `out_channels` and `strides` describe them and
`first_conv` names the input convolution (widened for label-input teachers)."""
from __future__ import annotations

import torch.nn as nn

BACKBONES = ("resnet18", "resnet50", "resnet101", "mobilenetv2", "stdc1", "stdc2", "hrnetv2_w18", "plaincnn")


def build_backbone(name: str, in_channels: int = 3, width: float = 1.0, **kw) -> nn.Module:
    if name in ("resnet18", "resnet50", "resnet101"):
        from lakd.models.backbones.resnet import ResNet

        return ResNet(int(name[len("resnet"):]), in_channels, width, **kw)
    if name == "mobilenetv2":
        from lakd.models.backbones.mobilenetv2 import MobileNetV2

        return MobileNetV2(in_channels, width, **kw)
    if name in ("stdc1", "stdc2"):
        from lakd.models.backbones.stdc import STDCNet

        return STDCNet(int(name[-1]), in_channels, width, **kw)
    if name == "hrnetv2_w18":
        from lakd.models.backbones.hrnet import HRNetV2

        return HRNetV2(18, in_channels, width, **kw)
    if name == "plaincnn":
        from lakd.models.backbones.plaincnn import PlainCNN

        return PlainCNN(in_channels, width, **kw)
    raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
