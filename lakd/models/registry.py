"""The model registry: `build_model(name, backbone, num_classes, ...)`, `list_models()`, `list_backbones()`.

Every (model, backbone) pair in `COMBINATIONS` is built, run forward + backward and checked in the tests.
Head widths at `width=1` follow the reference code of each family (CIRKD for FCN-aux/PSPNet/DeepLabV3 on
ResNet/MobileNetV2 -- this is the label-assisted distillation paper's code base --, mmseg for FCN, STDC and OCRNet);
`width < 1` scales backbone and heads alike (e.g. `width=0.125` trains in seconds on a CPU).

Auxiliary heads: an FCN head on c3 (ResNet layer3, MobileNetV2's 96-channel stage) for FCN / PSPNet / DeepLabV3,
an FCN head on the 1/16 context feature for STDC, the soft-object-region FCN head for OCRNet (always built, as
OCRNet needs it; `aux=False` only stops returning its logits). FCN / PSPNet / DeepLabV3 on HRNet have none.

Reproducing the official LAD code (DeepLabV3-ResNet18 teacher/student on VOC):
`build_model("deeplabv3", "resnet18", 21, 4, dropout=0.01, aspp_dropout=0.01)`; its PSPNet keeps dropout 0.1.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable

from lakd.components import COMBINATIONS, MODELS  # torch-free: the config checks names against them
from lakd.models.backbones import BACKBONES, build_backbone
from lakd.models.heads import ASPPHead, FCNHead, PSPHead
from lakd.models.layers import scale_channels
from lakd.models.segmentor import Segmentor

# keyword arguments accepted by the backbones (forwarded to them)
_BACKBONE_KW = {
    "resnet18": {"deep_stem", "stem_width"}, "resnet50": {"deep_stem", "stem_width"},
    "resnet101": {"deep_stem", "stem_width"},
    "mobilenetv2": set(), "stdc1": set(), "stdc2": set(), "hrnetv2_w18": {"concat_stride"}, "plaincnn": set(),
}
# keyword arguments every model accepts (not architecture: only used when loading `pretrained`)
_LOAD_KW = {"extra_channel_std"}


def list_models() -> list[str]:
    return list(MODELS)


def list_backbones(model: str | None = None) -> list[str]:
    """All backbones, or those `model` is registered with."""
    if model is None:
        return list(BACKBONES)
    _check_name(model)
    return list(COMBINATIONS[model])


def list_combinations() -> list[tuple[str, str]]:
    return [(m, b) for m in MODELS for b in COMBINATIONS[m]]


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")


def _head_channels(table: dict[str, int], backbone: str, override: int | None, width: float) -> int:
    base = override if override is not None else table[backbone]
    return scale_channels(int(base), width)


# ---------------------------------------------------------------------------------------------- builders
# each returns (decode_head, aux_head or None); `bb` is the built backbone


def _aux_on_c3(bb, backbone, num_classes, dropout):
    """FCN auxiliary head on c3 (ResNet layer3 / MobileNetV2 96-ch stage), channels = in/4 (CIRKD, mmseg)."""
    if backbone == "hrnetv2_w18":
        return None
    c3 = bb.out_channels[2]
    return FCNHead(c3, max(1, c3 // 4), num_classes, in_index=2, num_convs=1, dropout=dropout)


def _build_deeplabv3(bb, backbone, num_classes, width, aux, *, channels=None, rates=(12, 24, 36), dropout=0.1,
                     aspp_dropout=0.5, style="cirkd", aux_dropout=None):
    table = {"resnet18": 128, "resnet50": 256, "resnet101": 256, "mobilenetv2": 128, "hrnetv2_w18": 128,
             "plaincnn": 128}
    ch = _head_channels(table, backbone, channels, width)
    rates = tuple(int(r) for r in rates)
    head = ASPPHead(bb.out_channels[-1], ch, num_classes, rates=rates, dropout=dropout, aspp_dropout=aspp_dropout,
                    style=style)
    return head, (_aux_on_c3(bb, backbone, num_classes, dropout if aux_dropout is None else aux_dropout)
                  if aux else None)


def _build_pspnet(bb, backbone, num_classes, width, aux, *, channels=None, pool_channels=None, bins=(1, 2, 3, 6),
                  dropout=0.1, aux_dropout=None):
    table = {"resnet18": 128, "resnet50": 512, "resnet101": 512, "mobilenetv2": 128, "hrnetv2_w18": 128,
             "plaincnn": 128}
    ch = _head_channels(table, backbone, channels, width)
    pool_ch = scale_channels(int(pool_channels), width) if pool_channels is not None else None
    head = PSPHead(bb.out_channels[-1], ch, num_classes, pool_channels=pool_ch, bins=tuple(int(b) for b in bins),
                   dropout=dropout)
    return head, (_aux_on_c3(bb, backbone, num_classes, dropout if aux_dropout is None else aux_dropout)
                  if aux else None)


def _build_fcn(bb, backbone, num_classes, width, aux, *, channels=None, num_convs=None, concat_input=None,
               kernel_size=None, dropout=0.1, aux_dropout=None):
    if backbone == "hrnetv2_w18":  # mmseg fcn_hr18: 1x1 conv on the concatenated branches, no aux head
        in_ch = bb.out_channels[-1]
        ch = scale_channels(int(channels), width) if channels is not None else in_ch
        head = FCNHead(in_ch, ch, num_classes, num_convs=1 if num_convs is None else num_convs,
                       concat_input=bool(concat_input), kernel_size=1 if kernel_size is None else kernel_size,
                       dropout=dropout)
        return head, None
    table = {"resnet18": 128, "resnet50": 512, "resnet101": 512, "mobilenetv2": 128, "plaincnn": 128}
    ch = _head_channels(table, backbone, channels, width)
    # PlainCNN (the demo's backbone) gets a light head, one conv and no concat: with mmseg's two convs + concat
    # the label-assisted teacher learnt far less in the demo's budget (docs/method.md section 6)
    light = backbone == "plaincnn"
    head = FCNHead(bb.out_channels[-1], ch, num_classes,
                   num_convs=(1 if light else 2) if num_convs is None else num_convs,
                   concat_input=(not light) if concat_input is None else bool(concat_input),
                   kernel_size=3 if kernel_size is None else kernel_size, dropout=dropout)
    return head, (_aux_on_c3(bb, backbone, num_classes, dropout if aux_dropout is None else aux_dropout)
                  if aux else None)


def _build_ocrnet(bb, backbone, num_classes, width, aux, *, channels=None, ocr_channels=None, dropout=0.1,
                  aux_dropout=None):
    from lakd.models.heads.ocr import OCRHead

    big = backbone in ("resnet50", "resnet101", "hrnetv2_w18")
    ch = scale_channels(int(channels if channels is not None else (512 if big else 256)), width)
    ocr_ch = scale_channels(int(ocr_channels if ocr_channels is not None else (256 if big else 128)), width)
    aux_dropout = dropout if aux_dropout is None else aux_dropout
    if backbone == "hrnetv2_w18":  # mmseg ocrnet_hr18: both heads on the concatenated branches
        in_ch = bb.out_channels[-1]
        soft = FCNHead(in_ch, in_ch, num_classes, in_index=-1, num_convs=1, kernel_size=1, dropout=aux_dropout)
        head = OCRHead(in_ch, ch, ocr_ch, num_classes, in_index=-1, dropout=dropout)
    else:  # mmseg ocrnet_r*-d8: soft object regions from c3, object context on c4
        c3 = bb.out_channels[2]
        soft = FCNHead(c3, scale_channels(256, width) if big else max(1, c3 // 4), num_classes, in_index=2,
                       num_convs=1, dropout=aux_dropout)
        head = OCRHead(bb.out_channels[-1], ch, ocr_ch, num_classes, in_index=-1, dropout=dropout)
    return head, soft


def _build_stdc(bb, backbone, num_classes, width, aux, *, channels=None, dropout=0.1, aux_dropout=None):
    """mmseg STDC: the `stdc1/2` backbone is STDCNet + context path (ARMs) + feature fusion (output stride 8);
    the decode head is an FCN head on the fused feature, the aux head an FCN head on the 1/16 context feature."""
    ch = scale_channels(int(channels if channels is not None else 256), width)
    head = FCNHead(bb.out_channels[-1], ch, num_classes, in_index=-1, num_convs=1, concat_input=False,
                   dropout=dropout)
    aux_head = None
    if aux:
        aux_head = FCNHead(bb.out_channels[2], scale_channels(64, width), num_classes, in_index=2, num_convs=1,
                           dropout=dropout if aux_dropout is None else aux_dropout)
    return head, aux_head


_BUILDERS: dict[str, Callable] = {"fcn": _build_fcn, "pspnet": _build_pspnet, "deeplabv3": _build_deeplabv3,
                                  "stdc": _build_stdc, "ocrnet": _build_ocrnet}


def _model_kw(name: str) -> set[str]:
    import inspect

    params = inspect.signature(_BUILDERS[name]).parameters
    return {p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY}


def build_model(name: str, backbone: str, num_classes: int, in_channels: int = 3, *, width: float = 1.0,
                aux: bool = True, pretrained: str | None = None, **kw: Any) -> Segmentor:
    """Build a segmentation model; see the module docstring and `COMBINATIONS`.

    in_channels: 3 for image-only models, 3 + k for label-assisted teachers.
    pretrained:  a LOCAL file (safetensors or a torch weights-only checkpoint) with ImageNet backbone weights or a
                 whole-model checkpoint in lakd / CIRKD / mmseg / torchvision key layout (see `lakd.models.weights`).
                 A first conv with fewer input channels than the model is widened (RGB copied, the rest
                 N(0,1) * `extra_channel_std`, default 0.1 as the LAD code).
    kw:          model options (`channels`, `dropout` (0.1; decode and aux heads), `aux_dropout`, DeepLabV3
                 `rates` (12, 24, 36) / `aspp_dropout` (0.5) / `style` ("cirkd" or "mmseg"), PSPNet
                 `pool_channels` / `bins`, FCN `num_convs` / `concat_input` / `kernel_size`, OCRNet `ocr_channels`,
                 ResNet `deep_stem` (True; False = torchvision 7x7 stem) and `stem_width` (64: the deep stem's
                 convs are 64-64-128 as CIRKD; 32: 32-32-64 as mmseg's ResNetV1c), HRNet `concat_stride` (8 or 4)).
                 Channel options are given at width 1 and scaled by `width`. Unknown options raise ValueError.
    """
    _check_name(name)
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONES)}")
    if backbone not in COMBINATIONS[name]:
        raise ValueError(f"model {name!r} is not available with backbone {backbone!r}; "
                         f"{name} backbones: {', '.join(COMBINATIONS[name])}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not (0 < width <= 4) or math.isnan(width):
        raise ValueError(f"width must be a number in (0, 4], got {width!r}")
    width = float(width)
    model_kw_names, bb_kw_names = _model_kw(name), _BACKBONE_KW[backbone]
    unknown = set(kw) - model_kw_names - bb_kw_names - _LOAD_KW
    if unknown:
        valid = sorted(model_kw_names | bb_kw_names | _LOAD_KW)
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} for {name}-{backbone}; "
                         f"valid options: {', '.join(valid)}")
    config = {"name": name, "backbone": backbone, "num_classes": num_classes, "in_channels": in_channels,
              "width": width, "aux": bool(aux), **{k: _jsonable(k, v) for k, v in sorted(kw.items())}}

    bb = build_backbone(backbone, in_channels, width, **{k: v for k, v in kw.items() if k in bb_kw_names})
    head, aux_head = _BUILDERS[name](bb, backbone, num_classes, width, bool(aux),
                                     **{k: v for k, v in kw.items() if k in model_kw_names})
    model = Segmentor(bb, head, aux_head, config, return_aux=bool(aux))
    if pretrained is not None:
        from lakd.models.weights import load_pretrained

        # kept on the model so the engine can say what was loaded (and result.json where a stage started from)
        model.load_report = load_pretrained(model, pretrained,
                                            extra_channel_std=float(kw.get("extra_channel_std", 0.1)))
    return model


def _jsonable(key: str, value: Any) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ValueError(f"model option {key}={value!r} is not JSON-serialisable") from None
    return value
