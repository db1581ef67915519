"""Loading weights from LOCAL files into lakd models (nothing is downloaded).

Files: `.safetensors`, or torch checkpoints read with `torch.load(weights_only=True)` (never unpickling code).
A checkpoint dict may wrap the weights in `state_dict` / `model` / `module` / `net`; `module.` prefixes (DDP)
are stripped.

Layouts (`layout="auto"` detects them from the key names):
- `lakd`: lakd's own keys (exports, `model.state_dict()`).
- `cirkd`: CIRKD / LAD whole models (`pretrained.*`, `head.*`, `auxlayer.*`) for DeepLabV3 / PSPNet on ResNet and
  MobileNetV2, and CIRKD's ImageNet backbone files (`conv1.*`, `layer1.*`, or MobileNetV2 `features.*`).
- `mmseg`: mmsegmentation checkpoints (`backbone.*`, `decode_head.*`, `auxiliary_head.*`; ConvModule `.conv`/`.bn`)
  for ResNetV1c (`stem.*`), MobileNetV2, STDC, HRNet backbones and FCN / PSPNet / DeepLabV3 (needs
  `style="mmseg"`) / STDC / OCRNet heads, and mmseg/open-mmlab ImageNet backbone files.
- `torchvision`: torchvision ImageNet ResNet (needs `deep_stem=False`) and MobileNetV2 files, and torchvision
  `deeplabv3_resnet*` / `fcn_resnet*` (`backbone.*`, `classifier.*`, `aux_classifier.*`) whole models.

A file with only backbone weights ("backbone" scope) leaves the heads at their initialisation; classification
heads (`fc`, `classifier` of ImageNet files, STDC/HRNet ImageNet heads) are dropped and listed as ignored.
A first convolution with fewer input channels than the model (an RGB file into a label-assisted 3+k channel
teacher) is widened: the RGB slice is copied and the new channels are drawn from N(0, 1) * `extra_channel_std`
(0.1 as in the official LAD code).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

LAYOUTS = ("auto", "lakd", "cirkd", "mmseg", "torchvision")
_WRAPPERS = ("state_dict", "model", "module", "net", "model_state", "model_state_dict", "params")
# MobileNetV2 blocks per stage (t, c, n, s settings), to number torchvision-style `features.N`
_MBV2_REPEATS = (1, 2, 3, 4, 3, 3, 1)


@dataclass
class LoadReport:
    """What `load_weights` did. `ok` is False when anything the model needs did not load."""

    path: str
    layout: str
    scope: str  # "model" (whole model) or "backbone"
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the file lacks (in scope)
    unexpected: list[str] = field(default_factory=list)  # file keys the model has no place for
    mismatched: list[str] = field(default_factory=list)  # "key: file shape vs model shape"
    ignored: list[str] = field(default_factory=list)  # file keys dropped on purpose (classifier of ImageNet files)
    widened: list[str] = field(default_factory=list)  # first-conv keys widened to more input channels
    fresh: dict[str, int] = field(default_factory=dict)  # top-level modules the file does not cover -> tensors
    source: str = ""  # how the file was named (a catalogue entry), for the report
    extra_channel_std: float = 0.1  # std of the widened first conv's new input channels

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def first_misfit(self) -> str | None:
        """The first tensor that does not fit, as one phrase (shape mismatches first, then extra, then missing)."""
        if self.mismatched:
            key, shapes = self.mismatched[0].split(": ", 1)
            file_shape, model_shape = shapes.split(" vs ")
            return f"{key} is {file_shape} in the file, the model needs {model_shape}"
        if self.unexpected:
            return f"{self.unexpected[0]} (in the file) has no place in the model"
        if self.missing:
            return f"{self.missing[0]} (in the model) is not in the file"
        return None

    def describe(self) -> str:
        """The start-of-training report: what loaded, what was widened, dropped or left at initialisation."""
        src = f" (catalogue {self.source})" if self.source else ""
        lines = [f"pretrained: {self.path}{src}: {self.layout} layout, {self.scope} weights, "
                 f"{len(self.loaded)} tensors loaded"]
        for w in self.widened:
            key, shapes = w.split(" ", 1)
            a, b = (s.strip("[]").split(", ")[1] for s in shapes.split(" -> "))
            lines.append(f"  first conv {key} widened {a} -> {a} + {int(b) - int(a)} input channels "
                         f"(new channels drawn from N(0, 1) x {self.extra_channel_std:g})")
        if self.ignored:
            lines.append(f"  dropped from the file ({len(self.ignored)}): {_few(self.ignored)}")
        if self.fresh:
            parts = ", ".join(f"{k} ({n} tensors)" for k, n in self.fresh.items())
            lines.append(f"  initialised here, not in the file: {parts}")
        for label, xs in (("missing", self.missing), ("unexpected", self.unexpected),
                          ("shape mismatch", self.mismatched)):
            if xs:
                lines.append(f"  {label} ({len(xs)}): {_few(xs)}")
        return "\n".join(lines)

    def summary(self, limit: int = 6) -> str:
        def few(xs):
            return ", ".join(xs[:limit]) + (f", ... ({len(xs)} in all)" if len(xs) > limit else "")

        parts = [f"{self.path}: {self.layout} layout, {self.scope} weights, {len(self.loaded)} tensors fit"]
        for label, xs in (("missing", self.missing), ("unexpected", self.unexpected),
                          ("shape mismatch", self.mismatched), ("widened", self.widened),
                          ("ignored", self.ignored)):
            if xs:
                parts.append(f"{len(xs)} {label}: {few(xs)}")
        return "; ".join(parts)


def _few(xs: list[str], limit: int = 6) -> str:
    return ", ".join(xs[:limit]) + (f", ... ({len(xs)} in all)" if len(xs) > limit else "")


# ------------------------------------------------------------------------------------------------ reading


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a local weight file (safetensors, or a torch file read with weights_only=True)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"weight file {p} does not exist (weights are only read from local files)")
    with open(p, "rb") as f:
        head = f.read(16)
    if p.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            if p.suffix == ".safetensors":
                raise ValueError(f"weight file {p} is not a readable safetensors file: {exc}") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types; one line for the user
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"weight file {p} cannot be read as safetensors or a weights-only torch checkpoint "
                         f"({msg}); if you trust the file, re-save just its state dict (torch.save(ckpt"
                         f"['state_dict'], ...)) or convert it to safetensors") from None
    return _extract_tensors(obj, p)


def _extract_tensors(obj, p: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise ValueError(f"weight file {p} holds a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"weight file {p} contains no tensors (keys: {', '.join(list(map(str, obj))[:5])})")
    # strip wrapper prefixes (DDP `module.`, torch.compile `_orig_mod.`)
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


# ------------------------------------------------------------------------------------------------ layouts


def detect_layout(keys, model_keys=None) -> str:
    """Guess a file's key layout (see the module docstring) from its key names."""
    keys = list(keys)
    ks = set(keys)
    if model_keys is not None:
        mk = set(model_keys)
        if ks <= mk or all(("backbone." + k) in mk for k in ks):
            return "lakd"

    def any_prefix(*prefixes):
        return any(k.startswith(prefixes) for k in keys)

    if any_prefix("pretrained.", "head.", "auxlayer."):
        return "cirkd"
    if any_prefix("auxiliary_head.", "stem.", "backbone.stem.", "decode_head.conv_seg.", "decode_head.1.") or any(
            re.search(r"\.(conv|bn)\.(weight|bias|running_mean|running_var)$", k) for k in keys):
        return "mmseg"
    if any_prefix("classifier.0.convs.", "aux_classifier.") or "fc.weight" in ks and "conv1.weight" in ks \
            and ks.isdisjoint({"conv2.weight"}) and "layer1.0.conv1.weight" in ks:
        return "torchvision"
    if "features.1.conv.0.weight" in ks and keys and ks.isdisjoint({"features.1.conv.0.0.weight"}):
        return "cirkd"  # CIRKD's MobileNetV2 ImageNet file: flat `conv.N` indices
    if "features.1.conv.0.0.weight" in ks:
        return "torchvision"
    if any_prefix("backbone.", "decode_head.", "aux_head.") or "conv1.weight" in ks:
        return "lakd"
    return "lakd"


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        new = re.sub(pattern, repl, key)
        if new != key:
            return new
    return key


def _conv_module(key: str) -> str:
    """mmcv ConvModule `.conv.` / `.bn.` -> lakd `Sequential` `.0.` / `.1.`."""
    key = re.sub(r"\.conv\.(weight|bias)$", r".0.\1", key)
    return re.sub(r"\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$", r".1.\1", key)


def _mbv2_index(stage: int, block: int) -> int:
    return 1 + sum(_MBV2_REPEATS[: stage - 1]) + block


def _mbv2_flat_to_nested(key: str, expand: bool) -> str:
    """CIRKD MobileNetV2 `features.N.conv.K` (flat Sequential) -> torchvision nested `conv.A.B`."""
    m = re.match(r"^(.*features\.\d+\.conv\.)(\d+)\.(.+)$", key)
    if not m:
        return key
    pre, k, rest = m.group(1), int(m.group(2)), m.group(3)
    table = ({0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"} if expand
             else {0: "0.0", 1: "0.1", 3: "1", 4: "2"})
    return f"{pre}{table.get(k, str(k))}.{rest}"


def _mbv2_mmseg(key: str, expand_of: Callable[[int], bool]) -> str:
    m = re.match(r"^(.*?)conv1\.(conv|bn)\.(.+)$", key)
    if m and not re.search(r"layer\d", key):
        return f"{m.group(1)}features.0.{'0' if m.group(2) == 'conv' else '1'}.{m.group(3)}"
    m = re.match(r"^(.*?)layer(\d+)\.(\d+)\.conv\.(\d+)\.(conv|bn)\.(.+)$", key)
    if m:
        idx = _mbv2_index(int(m.group(2)), int(m.group(3)))
        k, kind, rest = int(m.group(4)), m.group(5), m.group(6)
        last = 2 if expand_of(idx) else 1
        sub = (f"{k}.{'0' if kind == 'conv' else '1'}" if k < last else f"{last + (kind == 'bn')}")
        return f"{m.group(1)}features.{idx}.conv.{sub}.{rest}"
    return key


# Head renames per layout: (regex, replacement), tried in order, first match wins.
_CIRKD_HEAD = [
    (r"^head\.aspp\.b0\.", "decode_head.aspp.convs.0."),
    (r"^head\.aspp\.b([123])\.block\.", r"decode_head.aspp.convs.\1."),
    (r"^head\.aspp\.b4\.gap\.", "decode_head.aspp.pool."),
    (r"^head\.aspp\.project\.", "decode_head.aspp.project."),
    (r"^head\.block\.4\.", "decode_head.classifier."),
    (r"^head\.block\.([01])\.", r"decode_head.bottleneck.\1."),
    (r"^head\.psp\.conv([1-4])\.([01])\.", lambda m: f"decode_head.ppm.{int(m.group(1)) - 1}.{int(m.group(2)) + 1}."),
    (r"^head\.classifier\.", "decode_head.classifier."),
    (r"^auxlayer\.block\.4\.", "aux_head.classifier."),
    (r"^auxlayer\.block\.([01])\.", r"aux_head.convs.0.\1."),
    (r"^pretrained\.net\.", "backbone."),
    (r"^pretrained\.", "backbone."),
]
_MMSEG_HEAD = [
    (r"^decode_head\.0\.", "aux_head."),  # OCRNet cascade: the soft-region FCN head
    (r"^decode_head\.1\.", "decode_head."),
    (r"^auxiliary_head\.0\.", "aux_head."),
    (r"^auxiliary_head\.(?!\d)", "aux_head."),
    (r"^(decode_head|aux_head)\.conv_seg\.", r"\1.classifier."),
    (r"^decode_head\.image_pool\.1\.0\.", "decode_head.aspp.pool.1."),
    (r"^decode_head\.image_pool\.1\.1\.", "decode_head.aspp.pool.2."),
    (r"^decode_head\.aspp_modules\.(\d+)\.", r"decode_head.aspp.convs.\1."),
    (r"^decode_head\.psp_modules\.(\d+)\.1\.([01])\.", lambda m: f"decode_head.ppm.{m.group(1)}.{int(m.group(2)) + 1}."),
]
_TV_HEAD = {
    "deeplabv3": [
        (r"^classifier\.0\.convs\.4\.([12])\.", r"decode_head.aspp.pool.\1."),
        (r"^classifier\.0\.convs\.(\d)\.", r"decode_head.aspp.convs.\1."),
        (r"^classifier\.0\.project\.", "decode_head.aspp.project."),
        (r"^classifier\.([12])\.", lambda m: f"decode_head.bottleneck.{int(m.group(1)) - 1}."),
        (r"^classifier\.4\.", "decode_head.classifier."),
    ],
    "fcn": [
        (r"^classifier\.([01])\.", r"decode_head.convs.0.\1."),
        (r"^classifier\.4\.", "decode_head.classifier."),
    ],
}
_TV_AUX = [(r"^aux_classifier\.([01])\.", r"aux_head.convs.0.\1."), (r"^aux_classifier\.4\.", "aux_head.classifier.")]
_STEM_V1C = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}


_WHOLE_PREFIXES = ("backbone.", "decode_head.", "aux_head.", "auxiliary_head.", "pretrained.", "head.",
                   "auxlayer.", "aux_classifier.")


def _is_imagenet_extra(key: str) -> bool:
    """Keys of ImageNet classification files that a segmentation backbone does not have."""
    return bool(re.match(r"^(fc|classifier|last_linear|head|final_layer|final_conv|incre_modules|"
                         r"downsamp_modules|features\.18|conv_last|linear|bn|avgpool)(\.|$)", key))


def convert_keys(state: dict[str, torch.Tensor], layout: str, model: nn.Module
                 ) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Rename `state` into lakd keys. Returns `(converted, scope, ignored_source_keys)`; scope is "model" when
    the file carries head weights, else "backbone"."""
    if layout not in LAYOUTS or layout == "auto":
        raise ValueError(f"unknown weight layout {layout!r}; valid layouts: {', '.join(LAYOUTS[1:])}")
    cfg = getattr(model, "config", {}) or {}
    name, backbone = cfg.get("name"), cfg.get("backbone", "")
    bare = not any(k.startswith(_WHOLE_PREFIXES) or k.startswith("classifier.0.convs.") for k in state)
    has_aux = getattr(model, "aux_head", None) is not None
    mbv2_expand = _mbv2_expand_table(model) if backbone == "mobilenetv2" else {}
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []

    for key, value in state.items():
        if bare and _is_imagenet_extra(key):
            ignored.append(key)
            continue
        k = key
        if layout == "lakd":
            if bare:
                k = "backbone." + k
        elif layout == "cirkd":
            k = "backbone." + k if bare else _rename(k, _CIRKD_HEAD)
            if backbone == "mobilenetv2":
                m = re.match(r"^backbone\.features\.(\d+)\.", k)
                if m and int(m.group(1)) > 0:
                    k = _mbv2_flat_to_nested(k, mbv2_expand.get(int(m.group(1)), True))
        elif layout == "mmseg":
            if bare:
                k = "backbone." + k
            if re.match(r"^auxiliary_head\.[1-9]\d*\.", k):  # STDC's extra aux / boundary heads
                ignored.append(key)
                continue
            if backbone == "mobilenetv2":
                k = _mbv2_mmseg(k, lambda i: mbv2_expand.get(i, True))
            k = _rename(k, _MMSEG_HEAD)
            k = _conv_module(k)
            k = _rename(k, _MMSEG_HEAD)  # image_pool / psp_modules / conv_seg after the ConvModule rename
            m = re.match(r"^backbone\.stem\.(\d)\.(.+)$", k)
            if m and m.group(1) in _STEM_V1C:
                k = f"backbone.{_STEM_V1C[m.group(1)]}.{m.group(2)}"
            if backbone in ("stdc1", "stdc2") and k.startswith("backbone.stages."):
                k = "backbone.backbone." + k[len("backbone."):]  # a bare STDCNet ImageNet file
        elif layout == "torchvision":
            if bare:
                k = "backbone." + k
            elif k.startswith("aux_classifier."):
                k = _rename(k, _TV_AUX)
            elif k.startswith("classifier."):
                if name not in _TV_HEAD:
                    raise ValueError(f"torchvision segmentation heads map onto lakd deeplabv3 and fcn only, "
                                     f"not {name}")
                k = _rename(k, _TV_HEAD[name])
        if k.startswith("aux_head.") and not has_aux:
            ignored.append(key)  # the model was built with aux=False
            continue
        out[k] = value
    scope = "model" if any(k.startswith(("decode_head.", "aux_head.")) for k in out) else "backbone"
    return out, scope, ignored


def _mbv2_expand_table(model: nn.Module) -> dict[int, bool]:
    feats = getattr(model.backbone, "features", [])
    return {i: len(block.conv) == 4 for i, block in enumerate(feats) if hasattr(block, "conv")}


# ------------------------------------------------------------------------------------------------ loading


def widen_first_conv(weight: torch.Tensor, in_channels: int, *, std: float = 0.1,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """A conv weight [O, I, k, k] widened to [O, in_channels, k, k]: the first I input channels are copied, the
    rest drawn from N(0, 1) * std (the official LAD code uses 0.1)."""
    out_ch, have = weight.shape[:2]
    if in_channels < have:
        raise ValueError(f"cannot narrow a first conv from {have} to {in_channels} input channels")
    extra = torch.randn((out_ch, in_channels - have, *weight.shape[2:]), generator=generator,
                        dtype=torch.float32).to(weight.dtype) * std
    return torch.cat([weight, extra.to(weight.device)], dim=1)


def load_weights(model: nn.Module, path: str | os.PathLike, *, layout: str = "auto", strict: bool = True,
                 extra_channel_std: float = 0.1, generator: torch.Generator | None = None,
                 dry_run: bool = False) -> LoadReport:
    """Load a local weight file into `model` (a lakd `Segmentor`); see the module docstring.

    strict=True raises ValueError (with the report's summary) when, within the file's scope, keys are missing,
    unexpected or of the wrong shape; nothing is loaded then. strict=False loads what fits and returns the report.
    dry_run=True only computes the report (the model may live on the meta device: nothing is copied).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown weight layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    raw = read_state_dict(path)
    if layout == "auto":
        layout = detect_layout(raw, model.state_dict().keys())
    state, scope, ignored = convert_keys(raw, layout, model)
    own = model.state_dict()
    report = LoadReport(str(path), layout, scope, ignored=ignored, extra_channel_std=extra_channel_std)
    first = _first_conv_key(model)
    to_load: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k not in own:
            report.unexpected.append(k)
            continue
        target = own[k]
        if k == first and v.dim() == 4 and v.shape[1] < target.shape[1] and v.shape[0] == target.shape[0] \
                and v.shape[2:] == target.shape[2:]:
            report.widened.append(f"{k} {list(v.shape)} -> {list(target.shape)}")
            if dry_run:
                to_load[k] = v
                continue
            v = widen_first_conv(v, target.shape[1], std=extra_channel_std, generator=generator)
        if v.shape != target.shape:
            report.mismatched.append(f"{k}: {list(v.shape)} vs {list(target.shape)}")
            continue
        to_load[k] = v
    # an ImageNet file covers the backbone body (for STDC: not the context path / fusion built on top of it)
    body = "backbone." + getattr(getattr(model, "backbone", None), "imagenet_prefix", "")
    if any(k.startswith("backbone.") and not k.startswith(body) for k in state):
        body = "backbone."  # the file has the whole backbone module
    in_scope = [k for k in own if scope == "model" or k.startswith(body)]
    report.missing = [k for k in in_scope if k not in state]
    report.loaded = sorted(to_load)
    for k in own:
        if k not in state and k not in report.missing:
            top = k.split(".")[0] if not k.startswith("backbone.") or body == "backbone." else \
                "backbone." + k[len("backbone."):].split(".")[0]
            report.fresh[top] = report.fresh.get(top, 0) + 1
    if strict and not report.ok:
        raise ValueError(f"weights do not fit {_model_name(model)}: {report.summary()}{fit_hint(report, model)}")
    if dry_run:
        return report
    with torch.no_grad():
        for k, v in to_load.items():
            own[k].copy_(v.to(own[k].dtype))
    return report


def fit_hint(report: LoadReport, model: nn.Module, key: str | None = None) -> str:
    """A short "(what to change)" suffix for a report that does not fit, or "". `key`: word it as config keys
    (`model.options...`) instead of build_model arguments."""
    cfg = getattr(model, "config", {}) or {}

    def setting(name: str, value: str, option: bool = True) -> str:
        if key is None:
            return f"build the model with {name}={value.capitalize()}"
        return f"set {key}.{'options.' if option else ''}{name}={value}"

    if any(m.startswith("backbone.conv1.weight:") for m in report.mismatched) and report.layout == "torchvision":
        return f" (torchvision ResNets have a 7x7 stem: {setting('deep_stem', 'false')})"
    if report.scope == "model" and report.missing and all(k.startswith("aux_head.") for k in report.missing):
        return f" (the file has no auxiliary head: {setting('aux', 'false', option=False)})"
    if any(".classifier." in m for m in report.mismatched):
        skip = ("load with lakd.models.weights.load_weights(..., strict=False) to skip the classifiers"
                if key is None else "a whole-model file must predict the same classes")
        return f" (different number of classes? the model has {cfg.get('num_classes')}; {skip})"
    return ""


def _first_conv_key(model: nn.Module) -> str | None:
    bb = getattr(model, "backbone", None)
    name = getattr(bb, "first_conv", None)
    if name is None:
        return None
    mod = bb.get_submodule(name)
    return f"backbone.{name}.weight" if isinstance(mod, nn.Conv2d) else None


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "config", {}) or {}
    return f"{cfg.get('name', type(model).__name__)}-{cfg.get('backbone', '?')}"


def load_pretrained(model: nn.Module, path: str | os.PathLike, *, layout: str = "auto",
                    extra_channel_std: float = 0.1) -> LoadReport:
    """`build_model(pretrained=...)`: strict load (clear ValueError on any missing / unexpected / mis-shaped key)."""
    return load_weights(model, path, layout=layout, strict=True, extra_channel_std=extra_channel_std)
