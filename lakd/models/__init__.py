"""lakd.models: segmentation models (FCN, PSPNet, DeepLabV3, STDC, OCRNet) on swappable backbones.

    from lakd.models import build_model
    model = build_model("deeplabv3", "resnet18", num_classes=21, in_channels=4)   # label-assisted teacher
    out = model(x)            # SegOutput(logits [N,21,H/8,W/8], aux_logits, features)

Weight files (local only): `lakd.models.weights`; stage-to-stage exports: `lakd.models.export`.
"""
from lakd.models.registry import (
    COMBINATIONS,
    build_model,
    list_backbones,
    list_combinations,
    list_models,
)
from lakd.models.segmentor import SegOutput, Segmentor

__all__ = ["COMBINATIONS", "SegOutput", "Segmentor", "build_model", "list_backbones", "list_combinations",
           "list_models"]
