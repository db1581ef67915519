"""OCRNet head (Yuan et al., "Object-contextual representations for semantic segmentation", ECCV 2020), as
mmseg's `OCRHead`: a 3x3 bottleneck, soft object regions (the logits of a preceding FCN head, passed in by the
`Segmentor` as the aux logits) gather per-class object representations, pixel-to-object attention adds the
object context, 1x1 fusion, dropout, classifier. Module names follow mmseg (`.conv`/`.bn` become `.0`/`.1`)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd.models.layers import conv_bn_relu, init_classifier


class ObjectAttentionBlock(nn.Module):
    def __init__(self, in_channels: int, key_channels: int):
        super().__init__()
        self.key_channels = key_channels
        self.query_project = nn.Sequential(conv_bn_relu(in_channels, key_channels, 1),
                                           conv_bn_relu(key_channels, key_channels, 1))
        self.key_project = nn.Sequential(conv_bn_relu(in_channels, key_channels, 1),
                                         conv_bn_relu(key_channels, key_channels, 1))
        self.value_project = conv_bn_relu(in_channels, key_channels, 1)
        self.out_project = conv_bn_relu(key_channels, in_channels, 1)
        self.bottleneck = conv_bn_relu(2 * in_channels, in_channels, 1)

    def forward(self, feats: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, _, h, w = feats.shape
        query = self.query_project(feats).flatten(2).transpose(1, 2)  # [N, HW, Ck]
        key = self.key_project(context).flatten(2)  # [N, Ck, K]
        value = self.value_project(context).flatten(2).transpose(1, 2)  # [N, K, Ck]
        sim = torch.softmax(torch.bmm(query, key) * self.key_channels ** -0.5, dim=-1)  # [N, HW, K]
        ctx = torch.bmm(sim, value).transpose(1, 2).reshape(n, self.key_channels, h, w)
        return self.bottleneck(torch.cat([self.out_project(ctx), feats], dim=1))


class OCRHead(nn.Module):
    needs_aux = True  # the Segmentor passes the soft-region logits

    def __init__(self, in_channels: int, channels: int, ocr_channels: int, num_classes: int, *,
                 in_index: int = -1, dropout: float = 0.1, scale: float = 1.0):
        super().__init__()
        self.in_index, self.scale = in_index, scale
        self.bottleneck = conv_bn_relu(in_channels, channels, 3)
        self.object_context_block = ObjectAttentionBlock(channels, ocr_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_classifier(self.classifier)

    def forward(self, feats, soft_regions: torch.Tensor):
        x = feats[self.in_index] if isinstance(feats, (list, tuple)) else feats
        y = self.bottleneck(x)
        if soft_regions.shape[-2:] != y.shape[-2:]:
            soft_regions = F.interpolate(soft_regions, size=y.shape[-2:], mode="bilinear", align_corners=False)
        probs = torch.softmax(self.scale * soft_regions.flatten(2), dim=2)  # [N, K, HW]
        context = torch.bmm(probs, y.flatten(2).transpose(1, 2))  # [N, K, C] object representations
        context = context.transpose(1, 2).unsqueeze(-1)  # [N, C, K, 1]
        y = self.object_context_block(y, context)
        return self.classifier(self.dropout(y)), y
