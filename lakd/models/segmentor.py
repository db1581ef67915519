"""`Segmentor` (backbone + decode head + optional auxiliary head) and its output `SegOutput`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn


@dataclass
class SegOutput:
    """What every lakd model returns.

    logits:     [N, num_classes, ceil(H/8), ceil(W/8)] main class logits (output stride 8; upsample them to the
                label size, bilinear with align_corners=True as the reference code, for the loss / prediction).
    aux_logits: [N, num_classes, h, w] auxiliary-head logits (FCN head on c3 for ResNets, OCRNet's soft object
                regions, STDC's context head) in training mode when the model has an aux head; None otherwise
                (eval mode skips the aux head).
    features:   [N, C, ceil(H/8), ceil(W/8)] the decode head's pre-classifier feature map (for feature KD).
    """

    logits: torch.Tensor
    aux_logits: torch.Tensor | None = None
    features: torch.Tensor | None = None


class Segmentor(nn.Module):
    """A segmentation network built by `lakd.models.build_model`.

    Submodules: `backbone` (returns a list of feature maps), `decode_head` (returns `(logits, features)`),
    `aux_head` (same, or None). A decode head with `needs_aux = True` (OCRNet) receives the aux logits too.
    `config` holds the `build_model` keyword arguments; `build_model(**model.config)` rebuilds the architecture.
    """

    def __init__(self, backbone: nn.Module, decode_head: nn.Module, aux_head: nn.Module | None,
                 config: dict[str, Any], *, return_aux: bool = True):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.aux_head = aux_head
        self._config = dict(config)
        self.return_aux = return_aux and aux_head is not None
        # stride of the logits w.r.t. the input: 8 for every registered model (4 for hrnetv2_w18, concat_stride=4)
        self.output_stride = int(getattr(backbone, "strides", [8])[-1])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @property
    def num_classes(self) -> int:
        return int(self._config["num_classes"])

    @property
    def in_channels(self) -> int:
        return int(self._config["in_channels"])

    def forward(self, x: torch.Tensor) -> SegOutput:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self._config['name']}-{self._config['backbone']} expects input [N, "
                             f"{self.in_channels}, H, W], got {list(x.shape)}")
        feats = self.backbone(x)
        aux = None
        needs_aux = getattr(self.decode_head, "needs_aux", False)
        if self.aux_head is not None and (needs_aux or (self.training and self.return_aux)):
            aux = self.aux_head(feats)[0]
        logits, features = self.decode_head(feats, aux) if needs_aux else self.decode_head(feats)
        return SegOutput(logits=logits, aux_logits=aux if (self.training and self.return_aux) else None,
                         features=features)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of `logits` for an input of `height` x `width` (ceil(H/8), ceil(W/8))."""
        return math.ceil(height / self.output_stride), math.ceil(width / self.output_stride)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())
