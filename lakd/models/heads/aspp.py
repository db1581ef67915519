"""DeepLabV3 head (Chen et al. 2017): atrous spatial pyramid pooling (1x1 + three dilated 3x3 at rates
12/24/36 + image pooling), then 3x3 conv-BN-ReLU, dropout, 1x1 classifier.

`style="cirkd"` (default; also torchvision's layout): concat [1x1, rates..., pool] -> 1x1 projection (with
`aspp_dropout`) -> 3x3 bottleneck. `style="mmseg"`: concat [pool, 1x1, rates...] -> 3x3 bottleneck (no projection).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd.models.layers import PooledConvBNReLU, conv_bn_relu, init_classifier

STYLES = ("cirkd", "mmseg")


class ASPP(nn.Module):
    def __init__(self, in_channels: int, channels: int, rates=(12, 24, 36), *, project: bool = True,
                 pool_first: bool = False, dropout: float = 0.5, align_corners: bool = True):
        super().__init__()
        self.pool_first, self.align_corners = pool_first, align_corners
        self.convs = nn.ModuleList([conv_bn_relu(in_channels, channels, 1)] +
                                   [conv_bn_relu(in_channels, channels, 3, dilation=r) for r in rates])
        self.pool = PooledConvBNReLU(1, in_channels, channels)
        n = len(rates) + 2
        self.project = (nn.Sequential(*conv_bn_relu(n * channels, channels, 1),
                                      nn.Dropout(dropout) if dropout > 0 else nn.Identity())
                        if project else None)
        self.out_channels = channels if project else n * channels

    def forward(self, x):
        pooled = F.interpolate(self.pool(x), x.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        branches = [conv(x) for conv in self.convs]
        branches = [pooled, *branches] if self.pool_first else [*branches, pooled]
        y = torch.cat(branches, dim=1)
        return self.project(y) if self.project is not None else y


class ASPPHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_classes: int, *, in_index: int = -1,
                 rates=(12, 24, 36), dropout: float = 0.1, aspp_dropout: float = 0.5, style: str = "cirkd",
                 align_corners: bool = True):
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"deeplabv3 head style {style!r} is not one of {', '.join(STYLES)}")
        self.in_index = in_index
        mm = style == "mmseg"
        self.aspp = ASPP(in_channels, channels, tuple(rates), project=not mm, pool_first=mm, dropout=aspp_dropout,
                         align_corners=align_corners)
        self.bottleneck = conv_bn_relu(self.aspp.out_channels, channels, 3)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_classifier(self.classifier)

    def forward(self, feats):
        x = feats[self.in_index] if isinstance(feats, (list, tuple)) else feats
        y = self.bottleneck(self.aspp(x))
        return self.classifier(self.dropout(y)), y
