"""PSPNet head (Zhao et al. 2017): pyramid pooling over bins 1/2/3/6, concat with the input, 3x3 conv-BN-ReLU,
dropout, 1x1 classifier. Defaults match CIRKD (`pool_channels = in/4`)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd.models.layers import PooledConvBNReLU, conv_bn_relu, init_classifier


class PSPHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_classes: int, *, in_index: int = -1,
                 pool_channels: int | None = None, bins: tuple[int, ...] = (1, 2, 3, 6), dropout: float = 0.1,
                 align_corners: bool = True):
        super().__init__()
        self.in_index = in_index
        self.align_corners = align_corners
        pool_channels = pool_channels or max(1, in_channels // 4)
        self.ppm = nn.ModuleList([PooledConvBNReLU(b, in_channels, pool_channels) for b in bins])
        self.bottleneck = conv_bn_relu(in_channels + len(bins) * pool_channels, channels, 3)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_classifier(self.classifier)

    def forward(self, feats):
        x = feats[self.in_index] if isinstance(feats, (list, tuple)) else feats
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size, mode="bilinear", align_corners=self.align_corners)
                  for stage in self.ppm]
        y = self.bottleneck(torch.cat([x, *pooled], dim=1))
        return self.classifier(self.dropout(y)), y
