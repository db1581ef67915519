"""Inference modes (whole, slide, msflip), extra label input handling, the evaluate loop."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lakd.evaluation.evaluate import _batches, evaluate, label_input_fn
from lakd.evaluation.inference import predict, window_starts
from lakd.method.label_noise import LabelNoiser

C = 3


class PointModel(nn.Module):
    """1x1 conv (translation equivariant, full resolution): whole == slide exactly."""

    def __init__(self, in_ch=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(in_ch, C, 1)
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return {"logits": self.conv(x), "aux_logits": None}


class CoarseModel(nn.Module):
    """Logits at 1/4 resolution, like a real segmentor at output stride 8."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, C, 3, padding=1)

    def forward(self, x):
        return F.avg_pool2d(self.conv(x), 4)


def test_window_starts_cover_and_end_at_border():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(4, 8, 2) == [0]
    for size, crop, stride in ((37, 8, 5), (64, 32, 21), (9, 9, 1)):
        s = window_starts(size, crop, stride)
        cover = torch.zeros(size)
        for a in s:
            cover[a:a + crop] += 1
        assert cover.min() >= 1 and s[-1] + crop == size


def test_whole_matches_direct_forward_and_upsamples():
    m = CoarseModel().eval()
    x = torch.randn(2, 3, 16, 20)
    out = predict(m, x)
    ref = F.interpolate(m(x), size=(16, 20), mode="bilinear", align_corners=True)
    assert out.shape == (2, C, 16, 20) and torch.allclose(out, ref)


def test_slide_equals_whole_for_pointwise_model_and_batches_windows():
    m = PointModel()
    x = torch.randn(2, 3, 23, 30)
    whole = predict(m, x)
    m.seen.clear()
    slide = predict(m, x, mode="slide", crop_size=(8, 12), stride=(5, 7), batch_size=8)
    assert torch.allclose(whole, slide, atol=1e-5)
    n_windows = len(window_starts(23, 8, 5)) * len(window_starts(30, 12, 7))
    assert sum(s[0] for s in m.seen) == 2 * n_windows  # every window of both images, ...
    assert len(m.seen) < n_windows  # ... several per forward
    # a crop larger than the image: one window of the image's size
    m.seen.clear()
    assert torch.allclose(predict(m, x, mode="slide", crop_size=64, stride=32), whole, atol=1e-6)
    assert m.seen == [(2, 3, 23, 30)]


def test_slide_averages_overlaps():
    class Const(nn.Module):  # each window predicts a different constant: overlaps must be averaged
        def __init__(self):
            super().__init__()
            self.k = 0

        def forward(self, x):
            self.k += 1
            return torch.full((x.shape[0], 1, x.shape[2], x.shape[3]), float(self.k))

    out = predict(Const(), torch.zeros(1, 3, 1, 10), mode="slide", crop_size=(1, 6), stride=(1, 4), batch_size=1)
    # windows [0,6) -> 1 and [4,10) -> 2: pixels 4, 5 average to 1.5
    assert out.flatten().tolist() == [1, 1, 1, 1, 1.5, 1.5, 2, 2, 2, 2]


def test_msflip_single_scale_no_flip_is_whole_and_flip_is_mirrored():
    m = CoarseModel().eval()
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(predict(m, x, mode="msflip", scales=[1.0], flip=False), predict(m, x))
    both = predict(m, x, mode="msflip", scales=[1.0], flip=True)
    mirrored = predict(m, x.flip(-1)).flip(-1)
    assert torch.allclose(both, (predict(m, x) + mirrored) / 2, atol=1e-6)
    out = predict(m, x, mode="msflip")  # default scales + flip
    assert out.shape == (1, C, 16, 16)
    out = predict(m, x, mode="msflip", scales=[0.5, 1.5], crop_size=12, flip=False)
    assert out.shape == (1, C, 16, 16)


def test_extra_input_is_resized_nearest_and_follows_the_image():
    m = PointModel(in_ch=4)
    x = torch.randn(1, 3, 8, 8)
    extra = torch.zeros(1, 1, 8, 8)
    extra[..., :, 4:] = 100.0
    for mode, kw in (("whole", {}), ("slide", {"crop_size": 4, "stride": 3}),
                     ("msflip", {"scales": [0.5, 1.0], "flip": True})):
        m.seen.clear()
        out = predict(m, x, mode=mode, extra_input=extra, **kw)
        assert out.shape == (1, C, 8, 8)
        assert all(s[1] == 4 for s in m.seen)
    # callable form
    out = predict(m, x, extra_input=lambda img: torch.zeros(img.shape[0], 1, *img.shape[-2:]))
    assert out.shape == (1, C, 8, 8)
    with pytest.raises(ValueError, match="extra input"):
        predict(m, x, extra_input=torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="mode"):
        predict(m, x, mode="tiles")
    with pytest.raises(ValueError, match="crop_size"):
        predict(m, x, mode="slide")


def _loader(n=5, sizes=((8, 8), (8, 8), (6, 10), (8, 8), (8, 8))):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        out.append({"image": torch.randn(1, 3, h, w, generator=g), "label": torch.randint(0, C, (1, h, w), generator=g),
                    "key": [f"img{i}"]})
    return out


def test_batching_groups_same_sizes_only():
    batches = list(_batches(_loader(), 4))
    assert [b["image"].shape[0] for b in batches] == [2, 1, 2]
    assert [k for b in batches for k in b["key"]] == [f"img{i}" for i in range(5)]


def test_evaluate_batched_equals_unbatched_and_restores_mode():
    m = PointModel()
    m.train()
    a = evaluate(m, _loader(), C, batch_size=1)
    b = evaluate(m, _loader(), C, batch_size=4)
    assert a == b and m.training
    seen = []
    evaluate(m, _loader(), C, on_prediction=lambda k, p, y: seen.extend(k))
    assert seen == [f"img{i}" for i in range(5)]


def test_evaluate_label_input_modes():
    noiser = LabelNoiser(C, scale=1.0)
    m = PointModel(in_ch=4)
    res = {mode: evaluate(m, _loader(), C, input_fn=label_input_fn(noiser, mode)) for mode in ("fixed", "zeros")}
    assert set(res["fixed"]) >= {"miou", "iou", "acc", "macc"}
    # fixed mode is reproducible (seeded pixel noise)
    assert evaluate(m, _loader(), C, input_fn=label_input_fn(noiser, "fixed")) == res["fixed"]
    with pytest.raises(ValueError, match="label input"):
        label_input_fn(noiser, "bogus")
    with pytest.raises(ValueError, match="classes"):
        evaluate(PointModel(), _loader(), C + 1)
