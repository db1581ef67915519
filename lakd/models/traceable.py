"""A tensor-in, tensor-out view of a lakd model for tracing and export (TorchScript, torch.export, ONNX).

The models return a :class:`~lakd.models.segmentor.SegOutput` dataclass, which ``torch.jit.trace``,
``torch.export`` and the ONNX exporter cannot carry. :class:`SegmentationLogits` wraps a model (it is not
changed: training keeps its SegOutput) and returns only a tensor:

- ``upsample=True`` (default): class scores ``[N, C, H, W]`` at the input resolution, bilinear with
  ``align_corners=True`` exactly as ``lakd.evaluation.inference`` (``whole`` mode) does, so ``argmax(1)`` is
  the prediction ``lakd eval`` / ``lakd predict`` would give;
- ``upsample=False``: the main logits ``[N, C, ceil(H/8), ceil(W/8)]`` as the model returns them.

The input is the normalised image ``(rgb_0_255 - mean) / std`` (plus the label channels of a label-assisted
teacher), as the eager model takes it; the export's JSON holds ``mean`` and ``std``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SegmentationLogits(nn.Module):
    def __init__(self, model: nn.Module, *, upsample: bool = True):
        super().__init__()
        from lakd.models.export import unwrap_model

        self.model = unwrap_model(model)
        self.upsample = bool(upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x).logits
        if self.upsample:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return logits
