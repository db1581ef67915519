"""Registry: every claimed (model, backbone) pair builds, runs forward + backward at a small width, gives the
documented shapes, builds deterministically; the CIRKD-style models match the reference parameter counts."""
import json

import pytest
import torch

from lakd.models import SegOutput, Segmentor, build_model, list_backbones, list_combinations, list_models

SMALL = 0.125


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,backbone", list_combinations())
def test_forward_backward_shapes(name, backbone):
    torch.manual_seed(0)
    model = build_model(name, backbone, num_classes=5, in_channels=4, width=SMALL)
    assert isinstance(model, Segmentor)
    x = torch.randn(2, 4, 65, 50)
    out = model(x)
    assert isinstance(out, SegOutput)
    h, w = model.output_size(65, 50)
    assert (h, w) == (9, 7)
    assert out.logits.shape == (2, 5, h, w)
    assert out.features is not None and out.features.shape[0] == 2 and out.features.shape[-2:] == (h, w)
    loss = out.logits.square().mean()
    if out.aux_logits is not None:
        assert out.aux_logits.shape[:2] == (2, 5)
        loss = loss + out.aux_logits.square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    model.eval()
    with torch.no_grad():
        ev = model(x)
    assert ev.aux_logits is None and ev.logits.shape == (2, 5, h, w)


@pytest.mark.parametrize("name,backbone", list_combinations())
def test_deterministic_construction_and_config_roundtrip(name, backbone):
    torch.manual_seed(123)
    a = build_model(name, backbone, 3, width=SMALL)
    torch.manual_seed(123)
    b = build_model(name, backbone, 3, width=SMALL)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    cfg = json.loads(json.dumps(a.config))
    c = build_model(**cfg)
    assert {k: v.shape for k, v in c.state_dict().items()} == {k: v.shape for k, v in sa.items()}
    assert c.config == a.config


@pytest.mark.parametrize("name,backbone,expected", [
    ("deeplabv3", "resnet18", 13_608_938),
    ("pspnet", "resnet18", 12_920_298),
    ("deeplabv3", "resnet101", 61_120_554),
    ("pspnet", "resnet101", 68_074_282),
])
def test_cirkd_reference_parameter_counts(name, backbone, expected):
    with torch.device("meta"):
        model = build_model(name, backbone, num_classes=21, in_channels=4, aux=True)
    assert _count(model) == expected


def test_no_aux_head():
    model = build_model("deeplabv3", "resnet18", 4, width=SMALL, aux=False)
    assert model.aux_head is None
    out = model(torch.randn(2, 3, 32, 32))
    assert out.aux_logits is None


def test_lists():
    assert list_models() == ["fcn", "pspnet", "deeplabv3", "stdc", "ocrnet"]
    assert set(list_backbones()) == {"resnet18", "resnet50", "resnet101", "mobilenetv2", "stdc1", "stdc2",
                                     "hrnetv2_w18", "plaincnn"}
    for m, b in list_combinations():
        assert b in list_backbones(m)


@pytest.mark.parametrize("args,kw,match", [
    (("segformer", "resnet18", 3), {}, r"unknown model 'segformer'; valid models: fcn, pspnet, deeplabv3"),
    (("fcn", "vgg16", 3), {}, r"unknown backbone 'vgg16'; valid backbones: resnet18, "),
    (("fcn", "resnet18", 1), {}, r"num_classes must be an integer >= 2"),
    (("fcn", "resnet18", 2.5), {}, r"num_classes must be an integer >= 2"),
    (("fcn", "resnet18", 3, 0), {}, r"in_channels must be an integer >= 1"),
    (("fcn", "resnet18", 3), {"width": 0}, r"width must be a number"),
    (("fcn", "resnet18", 3), {"rates": (1, 2, 3)}, r"unknown option\(s\) rates for fcn-resnet18; valid options"),
    (("deeplabv3", "resnet18", 3), {"style": "keras"}, r"style 'keras' is not one of"),
])
def test_bad_input(args, kw, match):
    with pytest.raises(ValueError, match=match):
        build_model(*args, **kw)


def test_input_channel_check():
    model = build_model("fcn", "resnet18", 3, in_channels=4, width=SMALL)
    with pytest.raises(ValueError, match=r"expects input \[N, 4, H, W\]"):
        model(torch.randn(1, 3, 16, 16))


def test_width_scales_parameters():
    with torch.device("meta"):
        full = _count(build_model("pspnet", "resnet18", 19))
        small = _count(build_model("pspnet", "resnet18", 19, width=SMALL))
    assert small < full / 50


@pytest.mark.parametrize("name", ["deeplabv3", "pspnet"])
def test_batch_of_one_trains(name):
    """Pooled 1x1 branches fall back to running statistics instead of failing on a batch of one."""
    model = build_model(name, "resnet18", 3, width=SMALL)
    out = model(torch.randn(1, 3, 40, 40))
    (out.logits.mean() + out.aux_logits.mean()).backward()


def test_hrnet_concat_stride_4():
    model = build_model("ocrnet", "hrnetv2_w18", 3, width=SMALL, concat_stride=4)
    assert model.output_stride == 4
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape[-2:] == model.output_size(64, 64) == (16, 16)
    assert build_model(**model.config).output_stride == 4
