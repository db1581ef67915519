"""FCN head (Long et al.): `num_convs` 3x3 conv-BN-ReLU, optional concat of the input, dropout, 1x1 classifier.
With `num_convs=1, channels=in/4` it is the auxiliary head used by CIRKD / torchvision / mmseg."""
from __future__ import annotations

import torch
import torch.nn as nn

from lakd.models.layers import conv_bn_relu, init_classifier


class FCNHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_classes: int, *, in_index: int = -1,
                 num_convs: int = 1, concat_input: bool = False, kernel_size: int = 3, dropout: float = 0.1):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"FCN head num_convs must be >= 1, got {num_convs}")
        self.in_index = in_index
        self.convs = nn.Sequential(*[
            conv_bn_relu(in_channels if i == 0 else channels, channels, kernel_size) for i in range(num_convs)
        ])
        self.conv_cat = conv_bn_relu(in_channels + channels, channels, kernel_size) if concat_input else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_classifier(self.classifier)

    def forward(self, feats: list[torch.Tensor] | torch.Tensor):
        x = feats[self.in_index] if isinstance(feats, (list, tuple)) else feats
        y = self.convs(x)
        if self.conv_cat is not None:
            y = self.conv_cat(torch.cat([x, y], dim=1))
        return self.classifier(self.dropout(y)), y
