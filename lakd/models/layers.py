"""Small building blocks shared by backbones and heads."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


def scale_channels(channels: int, width: float, minimum: int = 4) -> int:
    """`channels * width`, rounded, never below `minimum` (or `channels` itself when smaller)."""
    if width == 1.0:
        return int(channels)
    return max(min(minimum, channels), int(channels * width + 0.5))


# The first convolution carries every input channel (RGB plus a label-assisted teacher's k label channels) into
# the network. Scaled down with `width` it became a bottleneck: with 4 or 8 output channels (ResNet deep stem at
# width 1/8, STDC at width 1/4) label-assisted teachers ignored their label in every run measured, with 16 they
# used it (docs/method.md section 6). Small widths therefore keep at least this many first-conv channels.
STEM_MIN_CHANNELS = 16


def stem_channels(channels: int, width: float) -> int:
    """Output channels of a backbone's first convolution: `scale_channels`, but never below
    `STEM_MIN_CHANNELS` (or `channels` itself when smaller). Unchanged at width 1."""
    return max(min(STEM_MIN_CHANNELS, channels), scale_channels(channels, width))


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """conv (no bias) + BatchNorm + activation as `Sequential` (state-dict keys `0.weight`, `1.*`)."""
    padding = dilation * (kernel_size - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) convolutions, BatchNorm 1/0, zero biases: the ResNet/CIRKD scheme."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def init_classifier(conv: nn.Conv2d) -> None:
    """Pixel classifiers keep PyTorch's default initialisation (Kaiming-uniform, a = sqrt(5); as the official
    LAD / CIRKD heads, plain `nn.Conv2d`s). mmseg's N(0, 0.01) was used before: it scales the gradient that reaches
    every feature by ~0.01 at the start, and in the measured short runs (docs/method.md section 6) it both slowed
    learning and kept label-assisted teachers from using their label (58.0 -> 39.9 mIoU with the label)."""
    conv.reset_parameters()


class PooledConvBNReLU(nn.Sequential):
    """AdaptiveAvgPool -> 1x1 conv -> BN -> ReLU (keys `1.weight`, `2.*`), used by ASPP image pooling and
    PSP pyramid stages. With a 1x1 pooled map and a batch of one, training-mode BatchNorm has a single value
    per channel and would raise; the BN then normalises with its running statistics for that call instead."""

    def __init__(self, bins: int, in_ch: int, out_ch: int):
        super().__init__(nn.AdaptiveAvgPool2d(bins), nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))

    def forward(self, x):
        pool, conv, bn, relu = self
        y = conv(pool(x))
        if self.training and y.shape[0] * y.shape[2] * y.shape[3] == 1:
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            y = bn(y)
        return relu(y)
