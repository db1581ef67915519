"""Parameter and FLOP counts of lakd models without allocating weights (built on the meta device)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from lakd.models.registry import build_model


@dataclass
class ModelProfile:
    name: str
    backbone: str
    params: int
    flops: int | None  # one eval-mode forward pass of one image (multiply-add = 2 FLOPs); None when not counted
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    aux: bool

    def as_dict(self) -> dict:
        return asdict(self)


def profile_model(name: str, backbone: str, *, num_classes: int = 19, in_channels: int = 3,
                  input_size: tuple[int, int] = (512, 512), width: float = 1.0, flops: bool = True,
                  **kw) -> ModelProfile:
    h, w = (int(v) for v in input_size)
    if h < 1 or w < 1:
        raise ValueError(f"input size must be positive, got {h} x {w}")
    with torch.device("meta"):
        model = build_model(name, backbone, num_classes, in_channels, width=width, **kw)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    total = None
    out_hw = model.output_size(h, w)
    if flops:
        x = torch.empty(1, in_channels, h, w, device="meta")
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            out = model(x)
        total = int(counter.get_total_flops())
        out_hw = tuple(out.logits.shape[-2:])
    return ModelProfile(name, backbone, int(params), total, (h, w), tuple(int(v) for v in out_hw),
                        model.aux_head is not None)
