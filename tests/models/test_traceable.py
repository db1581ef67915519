"""SegmentationLogits: every model family traces (TorchScript) to a tensor equal to the eager one."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from lakd.models import build_model
from lakd.models.traceable import SegmentationLogits


@pytest.mark.parametrize("name,backbone", [("fcn", "resnet18"), ("pspnet", "mobilenetv2"),
                                           ("deeplabv3", "resnet18"), ("stdc", "stdc1"), ("ocrnet", "resnet18")])
def test_trace_matches_eager_at_other_sizes(name, backbone):
    torch.manual_seed(0)
    model = build_model(name, backbone, 5, in_channels=3, width=0.125).eval()
    wrapper = SegmentationLogits(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, torch.randn(1, 3, 64, 64))
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        want = F.interpolate(model(x).logits, size=(48, 80), mode="bilinear", align_corners=True)
        assert torch.equal(traced(x), want)
    assert type(model(x)).__name__ == "SegOutput"  # the model itself still returns its output object
