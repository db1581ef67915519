"""Initialisation and small-width scaling choices that decide whether a label-assisted teacher can use its label
(docs/method.md section 6): the first conv keeps 16 channels at small widths, pixel classifiers keep PyTorch's
default initialisation, PlainCNN keeps PyTorch's default conv initialisation."""
import math

import pytest
import torch.nn as nn

from lakd.models import build_model
from lakd.models.layers import STEM_MIN_CHANNELS, stem_channels


def _first_conv(model) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name, backbone, width", [
    ("deeplabv3", "resnet18", 0.125), ("stdc", "stdc1", 0.25), ("fcn", "mobilenetv2", 0.25),
    ("fcn", "hrnetv2_w18", 0.125), ("fcn", "plaincnn", 0.125), ("pspnet", "resnet50", 0.0625),
])
def test_small_widths_keep_a_16_channel_first_conv(name, backbone, width):
    conv = _first_conv(build_model(name, backbone, 8, 4, width=width))
    assert conv.in_channels == 4 and conv.out_channels == STEM_MIN_CHANNELS


@pytest.mark.parametrize("name, backbone, channels", [
    ("deeplabv3", "resnet18", 64), ("stdc", "stdc1", 32), ("fcn", "mobilenetv2", 32), ("fcn", "plaincnn", 64),
])
def test_full_width_first_conv_is_unchanged(name, backbone, channels):
    assert _first_conv(build_model(name, backbone, 8, 3)).out_channels == channels  # the paper's models


def test_stem_channels_rule():
    assert stem_channels(64, 1.0) == 64 and stem_channels(64, 0.5) == 32 and stem_channels(64, 0.125) == 16
    assert stem_channels(8, 0.5) == 8  # never more than the unscaled layer


def test_classifiers_keep_pytorch_default_init():
    model = build_model("deeplabv3", "resnet18", 8, 4, width=0.25)
    classifiers = [model.decode_head.classifier, model.aux_head.classifier]
    for conv in classifiers:
        bound = 1 / math.sqrt(conv.in_channels)  # kaiming_uniform(a=sqrt(5)) on a 1x1 conv
        w = conv.weight.detach()
        assert w.abs().max() <= bound + 1e-6
        assert w.std() > 0.5 * bound / math.sqrt(3)  # uniform(-b, b) has std b / sqrt(3); N(0, 0.01) is far below
        assert conv.bias.detach().abs().max() > 0  # default bias init, not zeros


def test_plaincnn_uses_pytorch_default_conv_init():
    conv = build_model("fcn", "plaincnn", 8, 4, width=0.25).backbone.layers[2][0]
    fan_in = conv.in_channels * 9
    assert conv.weight.detach().abs().max() <= 1 / math.sqrt(fan_in) + 1e-6  # kaiming fan-out would exceed it
