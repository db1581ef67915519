"""STDC1 / STDC2 (Fan et al., "Rethinking BiSeNet for real-time semantic segmentation", CVPR 2021) with the
context path (attention refinement modules + global context) and the feature fusion module, as mmseg's
`STDCContextPathNet`; module names follow mmseg so its weights map with `.conv`/`.bn` renames only.

Unlike mmseg (which builds but never applies the 3x3 `convs` after each ARM), the refinement convs are applied
as in the original STDC-Seg code, so every parameter is used.

Returns `[spatial_1/8, context_1/8, context_1/16, fused_1/8]` (mmseg's order: the decode head reads the fused
feature, the auxiliary heads the context features).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd.models.layers import STEM_MIN_CHANNELS, conv_bn_relu, init_weights

STAGES = {1: [(2, 1), (2, 1), (2, 1)], 2: [(2, 1, 1, 1), (2, 1, 1, 1, 1), (2, 1, 1)]}


def _c8(ch: int, width: float) -> int:
    """Channels scaled by `width`, a multiple of 8 (the STDC modules split channels by 2, 4 and 8)."""
    return max(8, int(round(ch * width / 8)) * 8)


class STDCModule(nn.Module):
    """Short-term dense concatenation module (`cat` fusion, 4 convs)."""

    def __init__(self, in_channels, out_channels, stride, num_convs=4):
        super().__init__()
        self.stride = stride
        self.layers = nn.ModuleList([conv_bn_relu(in_channels, out_channels // 2, 1)])
        if stride == 2:
            half = out_channels // 2
            self.avg_pool = conv_bn_relu(half, half, 3, 2, groups=half, act=None)  # depthwise stride-2 conv + BN
            self.skip = nn.AvgPool2d(3, 2, 1)
        for i in range(1, num_convs):
            factor = 2 ** (i + 1) if i != num_convs - 1 else 2 ** i
            self.layers.append(conv_bn_relu(out_channels // 2 ** i, out_channels // factor, 3))

    def forward(self, x):
        x0 = self.layers[0](x)
        y = self.avg_pool(x0) if self.stride == 2 else x0
        outs = [self.skip(x0) if self.stride == 2 else x0]
        for layer in self.layers[1:]:
            y = layer(y)
            outs.append(y)
        return torch.cat(outs, dim=1)


class STDCNetBody(nn.Module):
    """The STDCNet feature extractor: outputs at strides 2, 4, 8, 16, 32."""

    def __init__(self, version: int, in_channels: int, channels: list[int]):
        super().__init__()
        self.stages = nn.ModuleList([conv_bn_relu(in_channels, channels[0], 3, 2),
                                     conv_bn_relu(channels[0], channels[1], 3, 2)])
        for strides in STAGES[version]:
            idx = len(self.stages) - 1
            cin, cout = channels[idx], channels[idx + 1]
            self.stages.append(nn.Sequential(*[STDCModule(cin if i == 0 else cout, cout, s)
                                               for i, s in enumerate(strides)]))

    def forward(self, x):
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class AttentionRefinement(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = conv_bn_relu(in_channels, out_channels, 3, act=None)
        self.conv_attn = conv_bn_relu(out_channels, out_channels, 1, act=None)

    def forward(self, x):
        x = self.conv(x)
        return x * torch.sigmoid(self.conv_attn(F.adaptive_avg_pool2d(x, 1)))


class FeatureFusion(nn.Module):
    def __init__(self, in_channels, out_channels, scale_factor=4):
        super().__init__()
        mid = max(1, out_channels // scale_factor)
        self.conv0 = conv_bn_relu(in_channels, out_channels, 1)
        self.conv1 = nn.Sequential(nn.Conv2d(out_channels, mid, 1, bias=False), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(mid, out_channels, 1, bias=False))

    def forward(self, spatial, context):
        x = self.conv0(torch.cat([spatial, context], dim=1))
        attn = torch.sigmoid(self.conv2(self.conv1(F.adaptive_avg_pool2d(x, 1))))
        return x * attn + x


class STDCNet(nn.Module):
    """STDC backbone with context path: output stride 8 (fused feature)."""

    def __init__(self, version: int = 1, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        if version not in STAGES:
            raise ValueError(f"STDC version {version} is not one of {sorted(STAGES)}")
        ch = [_c8(c, width) for c in (32, 64, 256, 512, 1024)]
        ch[0] = max(ch[0], STEM_MIN_CHANNELS)  # the first conv carries the label channels too
        ctx, fused = _c8(128, width), _c8(256, width)
        self.backbone = STDCNetBody(version, in_channels, ch)
        self.arms = nn.ModuleList([AttentionRefinement(ch[3], ctx), AttentionRefinement(ch[4], ctx)])
        self.convs = nn.ModuleList([conv_bn_relu(ctx, ctx, 3), conv_bn_relu(ctx, ctx, 3)])
        self.conv_avg = conv_bn_relu(ch[4], ctx, 1)
        self.ffm = FeatureFusion(ch[2] + ctx, fused, 4)
        self.out_channels = [ch[2], ctx, ctx, fused]
        self.strides = [8, 8, 16, 8]
        self.first_conv = "backbone.stages.0.0"
        self.imagenet_prefix = "backbone."  # ImageNet files hold the STDCNet body only
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _, _, s8, s16, s32 = self.backbone(x)
        up = self.conv_avg(F.adaptive_avg_pool2d(s32, 1)).expand(-1, -1, *s32.shape[-2:])
        ctx_16 = self.convs[1](F.interpolate(self.arms[1](s32) + up, size=s16.shape[-2:], mode="nearest"))
        ctx_8 = self.convs[0](F.interpolate(self.arms[0](s16) + ctx_16, size=s8.shape[-2:], mode="nearest"))
        return [s8, ctx_8, ctx_16, self.ffm(s8, ctx_8)]
