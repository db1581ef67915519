"""Weight importers: CIRKD / mmseg / torchvision / lakd key layouts from local files, first-conv widening,
clear reports. The files are made here: state dicts with the key names and shapes of each layout."""
import re

import pytest
import torch
from safetensors.torch import save_file

from lakd.models import build_model
from lakd.models.weights import convert_keys, detect_layout, load_weights, read_state_dict, widen_first_conv

SMALL = 0.125


# ------------------------------------------------------------------ CIRKD reference layout, written from its code


def cirkd_shapes(model: str, depth: int, in_ch: int, ncls: int, aux: bool = True) -> dict[str, tuple]:
    """Key -> shape of a CIRKD/LAD whole-model checkpoint (SegBaseModel `pretrained` ResNet v1s + head/auxlayer)."""
    shapes: dict[str, tuple] = {}

    def conv(name, o, i, k, bias=False):
        shapes[name + ".weight"] = (o, i, k, k)
        if bias:
            shapes[name + ".bias"] = (o,)

    def bn(name, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{s}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    p = "pretrained."
    conv(p + "conv1", 64, in_ch, 3), bn(p + "bn1", 64)
    conv(p + "conv2", 64, 64, 3), bn(p + "bn2", 64)
    conv(p + "conv3", 128, 64, 3), bn(p + "bn3", 128)
    blocks = {18: [2, 2, 2, 2], 101: [3, 4, 23, 3]}[depth]
    exp = 1 if depth == 18 else 4
    inplanes = 128
    for li, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks), start=1):
        for b in range(n):
            pre = f"{p}layer{li}.{b}."
            cin = inplanes if b == 0 else planes * exp
            if exp == 1:
                conv(pre + "conv1", planes, cin, 3), bn(pre + "bn1", planes)
                conv(pre + "conv2", planes, planes, 3), bn(pre + "bn2", planes)
            else:
                conv(pre + "conv1", planes, cin, 1), bn(pre + "bn1", planes)
                conv(pre + "conv2", planes, planes, 3), bn(pre + "bn2", planes)
                conv(pre + "conv3", planes * 4, planes, 1), bn(pre + "bn3", planes * 4)
            if b == 0:  # every first block changes stride or width in the v1s layout
                conv(pre + "downsample.0", planes * exp, cin, 1), bn(pre + "downsample.1", planes * exp)
        inplanes = planes * exp
    c3, c4 = 256 * exp, 512 * exp
    if model == "deeplabv3":
        out = 128 if c4 == 512 else 256
        conv("head.aspp.b0.0", out, c4, 1), bn("head.aspp.b0.1", out)
        for i in (1, 2, 3):
            conv(f"head.aspp.b{i}.block.0", out, c4, 3), bn(f"head.aspp.b{i}.block.1", out)
        conv("head.aspp.b4.gap.1", out, c4, 1), bn("head.aspp.b4.gap.2", out)
        conv("head.aspp.project.0", out, 5 * out, 1), bn("head.aspp.project.1", out)
        conv("head.block.0", out, out, 3), bn("head.block.1", out)
        conv("head.block.4", ncls, out, 1, bias=True)
    else:
        out = 128 if c4 == 512 else 512
        for i in range(1, 5):
            conv(f"head.psp.conv{i}.0", c4 // 4, c4, 1), bn(f"head.psp.conv{i}.1", c4 // 4)
        conv("head.block.0", out, 2 * c4, 3), bn("head.block.1", out)
        conv("head.classifier", ncls, out, 1, bias=True)
    if aux:
        conv("auxlayer.block.0", c3 // 4, c3, 3), bn("auxlayer.block.1", c3 // 4)
        conv("auxlayer.block.4", ncls, c3 // 4, 1, bias=True)
    return shapes


def _n_params(shapes):
    return sum(int(torch.Size(s).numel()) for k, s in shapes.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def _tensors(shapes, device="cpu"):
    g = torch.Generator().manual_seed(1)
    out = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7, dtype=torch.long, device=device)
        elif device == "meta":
            out[k] = torch.empty(s, device="meta")
        else:
            out[k] = torch.randn(s, generator=g)
    return out


@pytest.mark.parametrize("model,depth,expected", [
    ("deeplabv3", 18, 13_608_938), ("pspnet", 18, 12_920_298),
    ("deeplabv3", 101, 61_120_554), ("pspnet", 101, 68_074_282),
])
def test_cirkd_layout_maps_key_for_key(model, depth, expected):
    shapes = cirkd_shapes(model, depth, 4, 21)
    assert _n_params(shapes) == expected  # the reference layout written above is the paper's architecture
    with torch.device("meta"):
        net = build_model(model, f"resnet{depth}", 21, 4)
    assert detect_layout(shapes) == "cirkd"
    converted, scope, ignored = convert_keys(_tensors(shapes, "meta"), "cirkd", net)
    own = net.state_dict()
    assert scope == "model" and not ignored
    assert set(converted) == set(own)
    assert all(converted[k].shape == own[k].shape for k in own)


@pytest.mark.parametrize("model", ["deeplabv3", "pspnet"])
def test_cirkd_whole_checkpoint_loads_without_missing_or_unexpected_keys(tmp_path, model):
    shapes = cirkd_shapes(model, 18, 4, 21)
    state = _tensors(shapes)
    path = tmp_path / "cirkd.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)  # DDP-wrapped, nested
    net = build_model(model, "resnet18", 21, 4)
    report = load_weights(net, path)
    assert report.ok and report.layout == "cirkd" and report.scope == "model"
    assert not report.missing and not report.unexpected and not report.mismatched and not report.ignored
    assert len(report.loaded) == len(net.state_dict())
    sd = net.state_dict()
    assert torch.equal(sd["backbone.layer4.1.conv2.weight"], state["pretrained.layer4.1.conv2.weight"])
    assert torch.equal(sd["aux_head.classifier.bias"], state["auxlayer.block.4.bias"])
    cls = "head.block.4.weight" if model == "deeplabv3" else "head.classifier.weight"
    assert torch.equal(sd["decode_head.classifier.weight"], state[cls])
    if model == "pspnet":
        assert torch.equal(sd["decode_head.ppm.2.2.running_var"], state["head.psp.conv3.1.running_var"])
    else:
        assert torch.equal(sd["decode_head.aspp.pool.1.weight"], state["head.aspp.b4.gap.1.weight"])
    # and through build_model(pretrained=...)
    again = build_model(model, "resnet18", 21, 4, pretrained=str(path))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), sd.values()))


def test_cirkd_imagenet_backbone_widened_for_label_teacher(tmp_path):
    shapes = {k[len("pretrained."):]: s for k, s in cirkd_shapes("deeplabv3", 18, 3, 21, aux=False).items()
              if k.startswith("pretrained.")}
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 512), (1000,)
    state = _tensors(shapes)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    net = build_model("deeplabv3", "resnet18", 19, 4, extra_channel_std=0.1)
    head_before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("backbone.")}
    report = load_weights(net, path, generator=torch.Generator().manual_seed(0))
    assert report.ok and report.scope == "backbone" and sorted(report.ignored) == ["fc.bias", "fc.weight"]
    assert report.widened == ["backbone.conv1.weight [64, 3, 3, 3] -> [64, 4, 3, 3]"]
    w = net.backbone.conv1.weight.detach()
    assert torch.equal(w[:, :3], state["conv1.weight"])
    assert 0.07 < float(w[:, 3].std()) < 0.13 and abs(float(w[:, 3].mean())) < 0.05
    assert all(torch.equal(net.state_dict()[k], v) for k, v in head_before.items())  # heads untouched


def test_widen_first_conv_std_is_configurable():
    w = torch.randn(8, 3, 3, 3)
    g = torch.Generator().manual_seed(0)
    out = widen_first_conv(w, 5, std=1e-4, generator=g)
    assert out.shape == (8, 5, 3, 3) and torch.equal(out[:, :3], w) and float(out[:, 3:].abs().max()) < 1e-3
    with pytest.raises(ValueError, match="cannot narrow"):
        widen_first_conv(w, 2)


# ------------------------------------------------------------------ mmseg layout


def to_mmseg(sd: dict, backbone: str) -> dict:
    """Rename a lakd state dict into mmsegmentation names (ConvModule .conv/.bn, stem.N, conv_seg, ...)."""
    stem = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6", "bn3": "7"}
    out = {}
    for k, v in sd.items():
        m = re.match(r"^backbone\.(conv[123]|bn[123])\.(.+)$", k)
        if m and backbone.startswith("resnet"):
            k = f"backbone.stem.{stem[m.group(1)]}.{m.group(2)}"
        k = re.sub(r"^(decode_head|aux_head)\.classifier\.", r"\1.conv_seg.", k)
        k = re.sub(r"^decode_head\.ppm\.(\d)\.([12])\.", lambda m: f"decode_head.psp_modules.{m.group(1)}.1."
                   f"{'conv' if m.group(2) == '1' else 'bn'}.", k)
        k = re.sub(r"^decode_head\.aspp\.pool\.([12])\.", lambda m: "decode_head.image_pool.1."
                   f"{'conv' if m.group(1) == '1' else 'bn'}.", k)
        k = re.sub(r"^decode_head\.aspp\.convs\.", "decode_head.aspp_modules.", k)
        if not backbone.startswith("resnet") or not k.startswith("backbone."):
            # Sequential conv-bn(-relu) -> ConvModule; first conv of the module tree stays a plain conv
            k = re.sub(r"\.0\.(weight|bias)$", r".conv.\1", k) if not re.search(
                r"(downsample|layer\d\.\d\.conv\d|ffm\.conv[12]|fuse_layers\.\d\.\d|\.conv_seg)", k) else k
            k = re.sub(r"\.1\.(weight|bias|running_mean|running_var|num_batches_tracked)$", r".bn.\1", k) \
                if not re.search(r"(downsample|fuse_layers\.\d\.\d|transition)", k) else k
        k = re.sub(r"^aux_head\.", "auxiliary_head.", k)
        out[k] = v
    return out


@pytest.mark.parametrize("model,backbone,kw", [
    ("pspnet", "resnet18", {}),
    ("deeplabv3", "resnet50", {"style": "mmseg"}),
    ("fcn", "resnet18", {}),
])
def test_mmseg_whole_model(tmp_path, model, backbone, kw):
    torch.manual_seed(0)
    src = build_model(model, backbone, 7, width=SMALL, **kw)
    mm = to_mmseg(src.state_dict(), backbone)
    assert any(k.startswith("backbone.stem.0.") for k in mm) and any(".conv_seg." in k for k in mm)
    assert any(k.startswith("auxiliary_head.") for k in mm)
    path = tmp_path / "mmseg.pth"
    torch.save({"meta": {"mmseg_version": "0.x", "CLASSES": ["a"] * 7}, "state_dict": mm}, path)
    torch.manual_seed(1)
    dst = build_model(model, backbone, 7, width=SMALL, **kw)
    report = load_weights(dst, path)
    assert report.layout == "mmseg" and report.ok, report.summary()
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_mmseg_resnet_v1c_backbone_file(tmp_path):
    src = build_model("pspnet", "resnet18", 7, width=SMALL)
    bb = {k[len("backbone."):]: v for k, v in to_mmseg(src.state_dict(), "resnet18").items()
          if k.startswith("backbone.")}
    assert "stem.0.weight" in bb and "conv1.weight" not in bb
    save_file(bb, str(tmp_path / "resnet18_v1c.safetensors"))
    dst = build_model("pspnet", "resnet18", 7, width=SMALL)
    report = load_weights(dst, tmp_path / "resnet18_v1c.safetensors")
    assert report.layout == "mmseg" and report.scope == "backbone" and report.ok
    assert torch.equal(dst.backbone.conv3.weight, src.backbone.conv3.weight)


# ------------------------------------------------------------------ torchvision layout


def test_torchvision_imagenet_resnet_needs_standard_stem(tmp_path):
    src = build_model("fcn", "resnet50", 5, width=SMALL, deep_stem=False)
    tv = {k[len("backbone."):]: v for k, v in src.state_dict().items() if k.startswith("backbone.")}
    assert tv["conv1.weight"].shape[-1] == 7
    tv["fc.weight"], tv["fc.bias"] = torch.zeros(1000, 256), torch.zeros(1000)
    path = tmp_path / "resnet50-tv.pth"
    torch.save(tv, path)
    dst = build_model("fcn", "resnet50", 5, width=SMALL, deep_stem=False)
    report = load_weights(dst, path)
    assert report.layout == "torchvision" and report.ok and report.ignored == ["fc.weight", "fc.bias"]
    assert torch.equal(dst.backbone.layer3[2].conv2.weight, src.backbone.layer3[2].conv2.weight)
    with pytest.raises(ValueError, match=r"build the model with deep_stem=False"):
        build_model("fcn", "resnet50", 5, width=SMALL, pretrained=str(path))


def test_torchvision_deeplabv3_whole_model(tmp_path):
    src = build_model("deeplabv3", "resnet50", 5, width=SMALL, deep_stem=False)
    rules = [(r"^decode_head\.aspp\.convs\.", "classifier.0.convs."),
             (r"^decode_head\.aspp\.pool\.", "classifier.0.convs.4."),
             (r"^decode_head\.aspp\.project\.", "classifier.0.project."),
             (r"^decode_head\.bottleneck\.0\.", "classifier.1."), (r"^decode_head\.bottleneck\.1\.", "classifier.2."),
             (r"^decode_head\.classifier\.", "classifier.4."),
             (r"^aux_head\.convs\.0\.", "aux_classifier."), (r"^aux_head\.classifier\.", "aux_classifier.4.")]
    tv = {}
    for k, v in src.state_dict().items():
        for pat, rep in rules:
            k2 = re.sub(pat, rep, k)
            if k2 != k:
                k = k2
                break
        tv[k] = v
    path = tmp_path / "deeplabv3_resnet50_coco.pth"
    torch.save(tv, path)
    dst = build_model("deeplabv3", "resnet50", 5, width=SMALL, deep_stem=False)
    report = load_weights(dst, path)
    assert report.layout == "torchvision" and report.ok, report.summary()
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def _mbv2_flat(sd):
    """lakd/torchvision MobileNetV2 nested `conv.A.B` -> CIRKD flat `conv.N` keys."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"^(.*features\.(\d+)\.conv\.)([\d.]+?)\.(weight|bias|running_mean|running_var|"
                     r"num_batches_tracked)$", k)
        if m and int(m.group(2)) > 0:
            expand = int(m.group(2)) > 1
            table = ({"0.0": 0, "0.1": 1, "1.0": 3, "1.1": 4, "2": 6, "3": 7} if expand
                     else {"0.0": 0, "0.1": 1, "1": 3, "2": 4})
            k = f"{m.group(1)}{table[m.group(3)]}.{m.group(4)}"
        out[k] = v
    return out


def test_mobilenetv2_layouts(tmp_path):
    src = build_model("deeplabv3", "mobilenetv2", 5, width=SMALL)
    bb = {k[len("backbone."):]: v for k, v in src.state_dict().items() if k.startswith("backbone.")}
    # torchvision ImageNet file: same names plus the 1280-channel conv and the classifier
    tv = dict(bb, **{"features.18.0.weight": torch.zeros(1280, 40, 1, 1), "classifier.1.weight": torch.zeros(10, 1280),
                     "classifier.1.bias": torch.zeros(10)})
    torch.save(tv, tmp_path / "tv.pth")
    dst = build_model("deeplabv3", "mobilenetv2", 5, width=SMALL)
    report = load_weights(dst, tmp_path / "tv.pth")
    assert report.layout == "torchvision" and report.ok and len(report.ignored) == 3
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items() if k.startswith("backbone."))
    # CIRKD ImageNet file: flat InvertedResidual indices (`features.N.conv.K`)
    flat = dict(_mbv2_flat(bb), **{"classifier.1.weight": torch.zeros(10, 1280)})
    assert detect_layout(flat) == "cirkd"
    torch.save(flat, tmp_path / "mobilenetv2-imagenet.pth")
    dst = build_model("deeplabv3", "mobilenetv2", 5, 4, width=SMALL)
    report = load_weights(dst, tmp_path / "mobilenetv2-imagenet.pth")
    assert report.ok and report.scope == "backbone" and len(report.widened) == 1
    assert torch.equal(dst.backbone.features[5].conv[1][0].weight, src.backbone.features[5].conv[1][0].weight)
    # CIRKD whole model (flat InvertedResidual indices, `pretrained.net.` prefix, no aux head)
    src2 = build_model("deeplabv3", "mobilenetv2", 5, width=SMALL, aux=False)
    cirkd = {}
    for k, v in _mbv2_flat(src2.state_dict()).items():
        k = k.replace("backbone.", "pretrained.net.")
        k = re.sub(r"^decode_head\.classifier\.", "head.block.4.", k)
        k = re.sub(r"^decode_head\.bottleneck\.", "head.block.", k)
        k = re.sub(r"^decode_head\.aspp\.convs\.0\.", "head.aspp.b0.", k)
        k = re.sub(r"^decode_head\.aspp\.convs\.(\d)\.", r"head.aspp.b\1.block.", k)
        k = re.sub(r"^decode_head\.aspp\.pool\.", "head.aspp.b4.gap.", k)
        k = re.sub(r"^decode_head\.aspp\.project\.", "head.aspp.project.", k)
        cirkd[k] = v
    torch.save(cirkd, tmp_path / "cirkd_mbv2.pth")
    with pytest.raises(ValueError, match=r"build the model with aux=False"):
        build_model("deeplabv3", "mobilenetv2", 5, width=SMALL, pretrained=str(tmp_path / "cirkd_mbv2.pth"))
    dst2 = build_model("deeplabv3", "mobilenetv2", 5, width=SMALL, aux=False,
                       pretrained=str(tmp_path / "cirkd_mbv2.pth"))
    assert all(torch.equal(a, b) for a, b in zip(src2.state_dict().values(), dst2.state_dict().values()))


# ------------------------------------------------------------------ lakd layout, errors


@pytest.mark.parametrize("model,backbone", [("ocrnet", "hrnetv2_w18"), ("stdc", "stdc2")])
def test_lakd_layout_round_trip(tmp_path, model, backbone):
    src = build_model(model, backbone, 5, 4, width=SMALL)
    save_file(src.state_dict(), str(tmp_path / "m.safetensors"))
    dst = build_model(model, backbone, 5, 4, width=SMALL, pretrained=str(tmp_path / "m.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_errors(tmp_path):
    net = build_model("pspnet", "resnet18", 5, width=SMALL)
    with pytest.raises(ValueError, match=r"does not exist \(weights are only read from local files\)"):
        load_weights(net, tmp_path / "absent.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match=r"junk\.safetensors is not a readable safetensors file"):
        read_state_dict(tmp_path / "junk.safetensors")

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil\.pth cannot be read as safetensors or a weights-only"):
        read_state_dict(tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"unknown weight layout 'caffe'"):
        load_weights(net, tmp_path / "evil.pth", layout="caffe")
    other = build_model("pspnet", "resnet18", 9, width=SMALL)
    torch.save(other.state_dict(), tmp_path / "nine.pth")
    with pytest.raises(ValueError, match=r"weights do not fit pspnet-resnet18: .*4 shape mismatch: "
                                         r"decode_head\.classifier\.weight: \[9, 16, 1, 1\] vs \[5, 16, 1, 1\].*"
                                         r"different number of classes"):
        load_weights(net, tmp_path / "nine.pth")
    report = load_weights(net, tmp_path / "nine.pth", strict=False)
    assert not report.ok and len(report.mismatched) == 4 and len(report.loaded) == len(net.state_dict()) - 4
    assert torch.equal(net.backbone.conv1.weight, other.backbone.conv1.weight)
    torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "opt.pth")
    with pytest.raises(ValueError, match="contains no tensors"):
        read_state_dict(tmp_path / "opt.pth")


# mmseg key names (from mmsegmentation's HRNet / OCRHead / STDCContextPathNet / MobileNetV2 modules) with the
# shapes they have at width 1 and 19 classes
MMSEG_SAMPLES = {
    ("ocrnet", "hrnetv2_w18"): {
        "backbone.conv1.weight": (64, 3, 3, 3),
        "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "backbone.transition1.0.0.weight": (18, 256, 3, 3),
        "backbone.transition1.1.0.0.weight": (36, 256, 3, 3),
        "backbone.transition3.3.0.1.running_var": (144,),
        "backbone.stage2.0.branches.1.3.conv2.weight": (36, 36, 3, 3),
        "backbone.stage2.0.fuse_layers.0.1.0.weight": (18, 36, 1, 1),
        "backbone.stage2.0.fuse_layers.1.0.0.0.weight": (36, 18, 3, 3),
        "backbone.stage4.2.fuse_layers.3.0.0.1.weight": (18,),
        "backbone.stage4.2.fuse_layers.3.0.2.1.running_mean": (144,),
        "decode_head.0.convs.0.conv.weight": (270, 270, 1, 1),
        "decode_head.0.conv_seg.weight": (19, 270, 1, 1),
        "decode_head.1.bottleneck.conv.weight": (512, 270, 3, 3),
        "decode_head.1.object_context_block.query_project.1.conv.weight": (256, 256, 1, 1),
        "decode_head.1.object_context_block.key_project.0.bn.weight": (256,),
        "decode_head.1.object_context_block.value_project.conv.weight": (256, 512, 1, 1),
        "decode_head.1.object_context_block.out_project.bn.weight": (512,),
        "decode_head.1.object_context_block.bottleneck.conv.weight": (512, 1024, 1, 1),
        "decode_head.1.conv_seg.bias": (19,),
    },
    ("stdc", "stdc1"): {
        "backbone.backbone.stages.0.conv.weight": (32, 3, 3, 3),
        "backbone.backbone.stages.2.0.layers.0.conv.weight": (128, 64, 1, 1),
        "backbone.backbone.stages.2.0.avg_pool.conv.weight": (128, 1, 3, 3),
        "backbone.backbone.stages.2.0.layers.3.bn.running_var": (32,),
        "backbone.backbone.stages.4.1.layers.1.conv.weight": (256, 512, 3, 3),
        "backbone.arms.1.conv.conv.weight": (128, 1024, 3, 3),
        "backbone.arms.1.conv_attn.conv.weight": (128, 128, 1, 1),
        "backbone.convs.0.conv.weight": (128, 128, 3, 3),
        "backbone.conv_avg.conv.weight": (128, 1024, 1, 1),
        "backbone.ffm.conv0.conv.weight": (256, 384, 1, 1),
        "backbone.ffm.conv1.conv.weight": (64, 256, 1, 1),
        "backbone.ffm.conv2.conv.weight": (256, 64, 1, 1),
        "decode_head.convs.0.conv.weight": (256, 256, 3, 3),
        "decode_head.conv_seg.weight": (19, 256, 1, 1),
        "auxiliary_head.0.convs.0.conv.weight": (64, 128, 3, 3),
        "auxiliary_head.0.conv_seg.weight": (19, 64, 1, 1),
    },
    ("pspnet", "mobilenetv2"): {
        "backbone.conv1.conv.weight": (32, 3, 3, 3),
        "backbone.layer1.0.conv.0.conv.weight": (32, 1, 3, 3),
        "backbone.layer1.0.conv.1.conv.weight": (16, 32, 1, 1),
        "backbone.layer1.0.conv.1.bn.weight": (16,),
        "backbone.layer2.1.conv.0.conv.weight": (144, 24, 1, 1),
        "backbone.layer2.1.conv.1.conv.weight": (144, 1, 3, 3),
        "backbone.layer2.1.conv.2.conv.weight": (24, 144, 1, 1),
        "backbone.layer2.1.conv.2.bn.running_mean": (24,),
        "backbone.layer7.0.conv.2.conv.weight": (320, 960, 1, 1),
        "decode_head.psp_modules.3.1.conv.weight": (80, 320, 1, 1),
        "decode_head.bottleneck.conv.weight": (128, 640, 3, 3),
        "auxiliary_head.convs.0.conv.weight": (24, 96, 3, 3),
    },
}


@pytest.mark.parametrize("model,backbone", list(MMSEG_SAMPLES))
def test_mmseg_key_names_land_on_same_shaped_lakd_keys(model, backbone):
    shapes = MMSEG_SAMPLES[(model, backbone)]
    extra = {"auxiliary_head.2.convs.0.conv.weight": (64, 256, 3, 3)} if model == "stdc" else {}
    with torch.device("meta"):
        net = build_model(model, backbone, 19)
    state = _tensors(dict(shapes, **extra), "meta")
    assert detect_layout(state) == "mmseg"
    converted, scope, ignored = convert_keys(state, "mmseg", net)
    own = net.state_dict()
    assert scope == "model" and ignored == list(extra)
    assert len(converted) == len(shapes)
    for k, v in converted.items():
        assert k in own, k
        assert own[k].shape == v.shape, k


def test_bare_stdc_imagenet_file_widened(tmp_path):
    """An mmseg-style STDCNet ImageNet file (`stages.*` with ConvModule names) into a 3+2 channel teacher."""
    src = build_model("stdc", "stdc1", 5, width=SMALL)
    bare = {}
    for k, v in src.state_dict().items():
        if k.startswith("backbone.backbone."):
            k = k[len("backbone.backbone."):]
            k = re.sub(r"\.0\.(weight|bias)$", r".conv.\1", k)
            k = re.sub(r"\.1\.(weight|bias|running_mean|running_var|num_batches_tracked)$", r".bn.\1", k)
            bare[k] = v
    bare["linear.weight"] = torch.zeros(10, 128)
    save_file(bare, str(tmp_path / "stdc1.safetensors"))
    dst = build_model("stdc", "stdc1", 5, in_channels=5, width=SMALL)
    report = load_weights(dst, tmp_path / "stdc1.safetensors")
    assert report.layout == "mmseg" and report.scope == "backbone" and report.ok, report.summary()
    assert report.ignored == ["linear.weight"] and len(report.widened) == 1
    w = dst.backbone.backbone.stages[0][0].weight
    assert w.shape[1] == 5 and torch.equal(w[:, :3], src.backbone.backbone.stages[0][0].weight)
    assert torch.equal(dst.backbone.backbone.stages[3][1].layers[2][0].weight,
                       src.backbone.backbone.stages[3][1].layers[2][0].weight)


def test_export_of_wrapped_engine_like_object(tmp_path):
    from lakd.models.export import load_export, save_export

    class Engine(torch.nn.Module):  # DeepSpeedEngine keeps its own `config` and the model as `.module`
        def __init__(self, m):
            super().__init__()
            self.module = m
            self.config = {"train_batch_size": 8}

    model = build_model("fcn", "mobilenetv2", 4, width=SMALL)
    save_export(Engine(model), tmp_path / "e", {"dataset": "camvid"})
    loaded, meta = load_export(tmp_path / "e")
    assert meta["model"]["name"] == "fcn" and meta["label_channels"] == 0
