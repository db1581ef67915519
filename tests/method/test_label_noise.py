"""Label Noising Module: codes per image/class/path, pixel noise, ignore slot, fixed codes, k-dim codes."""
import pytest
import torch

from lakd import IGNORE_INDEX
from lakd.method.label_noise import LabelNoiser, fixed_codes


def _labels(b=3, h=12, w=10, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (b, h, w), generator=g)
    y[:, :2, :] = IGNORE_INDEX  # an ignore band in every image
    return y


def _class_values(ch, y, b, cls):
    """Values of channel map ch[b] at the pixels of class cls: [n_pixels, k]."""
    return ch[b].permute(1, 2, 0)[y[b] == cls]


def test_shapes_dtype_and_zero_channel_mode():
    y = _labels()
    n = LabelNoiser(5)
    assert n.random(y).shape == (3, 1, 12, 10) and n.random(y).dtype == torch.float32
    assert n.fixed(y).shape == (3, 1, 12, 10)
    assert n.zeros(y).shape == (3, 1, 12, 10) and not n.zeros(y).any()
    k = LabelNoiser(5, code_dim=4)
    for mode in (k.random, k.fixed, k.zeros):
        assert mode(y).shape == (3, 4, 12, 10)
    none = LabelNoiser(5, code_dim=0)
    assert none.random(y).shape == (3, 0, 12, 10) and none.fixed(y).shape == (3, 0, 12, 10)
    img = torch.randn(3, 3, 12, 10)
    assert none.apply(img, y, "random").shape == (3, 3, 12, 10)
    assert k.apply(img, y, "fixed").shape == (3, 7, 12, 10)
    assert torch.equal(k.apply(img, None, "zeros")[:, 3:], torch.zeros(3, 4, 12, 10))


@pytest.mark.parametrize("code_dim", [1, 3])
def test_pixels_of_a_class_share_one_code_up_to_pixel_noise(code_dim):
    y = _labels()
    n = LabelNoiser(5, code_dim=code_dim, sigma=0.03, scale=100.0)
    ch = n.random(y, torch.Generator().manual_seed(1))
    for b in range(3):
        for cls in [0, 1, 2, 3, 4, IGNORE_INDEX]:
            v = _class_values(ch, y, b, cls) / 100.0
            if len(v) < 2:
                continue
            # one code per (image, class): deviations around the class mean are pixel noise with std 0.03
            dev = v - v.mean(0)
            assert dev.abs().max() < 0.2
            if len(v) > 10:
                assert 0.015 < float(dev.std()) < 0.05


def test_codes_differ_between_images_paths_and_classes():
    y = _labels(b=4)
    y[:] = y[0]  # same label map in every image
    n = LabelNoiser(5, sigma=0.0)
    g = torch.Generator().manual_seed(3)
    p1, p2 = n.random(y, g), n.random(y, g)
    # class code = value at any pixel of the class (no pixel noise here)
    def code(ch, b, cls):
        return float(_class_values(ch, y, b, cls)[0, 0])
    for cls in [0, 1, 2, IGNORE_INDEX]:
        per_image = {round(code(p1, b, cls), 4) for b in range(4)}
        assert len(per_image) == 4, "codes must be drawn per image"
        assert code(p1, 0, cls) != code(p2, 0, cls), "two noisings (paths) must draw fresh codes"
    assert len({round(code(p1, 0, c), 4) for c in [0, 1, 2, 3, 4, IGNORE_INDEX]}) == 6
    # codes are N(0, 1) * scale: check the spread over many draws
    big = LabelNoiser(3, sigma=0.0, scale=100.0).random(torch.zeros(4000, 1, 1, dtype=torch.long))
    assert abs(float(big.mean())) < 6 and 90 < float(big.std()) < 110


def test_ignore_is_its_own_slot_not_masked():
    y = torch.full((2, 6, 6), IGNORE_INDEX)
    y[:, 3:, :] = 1
    n = LabelNoiser(4, sigma=0.0, fixed_sigma=0.0)
    ch = n.random(y, torch.Generator().manual_seed(0))
    ign = _class_values(ch, y, 0, IGNORE_INDEX)
    assert ign.abs().min() > 0  # ignore pixels get a code, they are not zeroed
    assert torch.allclose(ign, ign[0].expand_as(ign))
    fx = n.fixed(y)
    assert torch.allclose(_class_values(fx, y, 0, IGNORE_INDEX), torch.tensor(100.0 * 1.0))  # last slot = 1.0


def test_fixed_code_is_official_for_22_slots_and_deterministic():
    codes = fixed_codes(22).flatten()
    assert torch.allclose(codes, (torch.arange(22) - 11) / 10.0, atol=1e-6)
    y = _labels(c=21)
    n = LabelNoiser(21, fixed_sigma=0.02)
    a = n.fixed(y, torch.Generator().manual_seed(5))
    b = n.fixed(y, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # the code per class is identical for every image and call (only the pixel noise is random)
    for cls in [0, 3, 7, IGNORE_INDEX]:
        slot = 21 if cls == IGNORE_INDEX else cls
        for b_ in range(3):
            v = _class_values(a, y, b_, cls)[:, 0] / 100.0
            if len(v) > 5:
                assert abs(float(v.mean()) - (slot - 11) / 10.0) < 0.03
                assert float(v.std()) < 0.04
    exact = LabelNoiser(21, fixed_sigma=0.0)
    assert torch.equal(exact.fixed(y), exact.fixed(y))


def test_fixed_codes_generalise_to_any_class_count_and_dims():
    for slots in (2, 12, 20, 151, 183):
        c = fixed_codes(slots).flatten()
        assert len(c) == slots and torch.isclose(c[0], torch.tensor(-1.1)) and torch.isclose(c[-1], torch.tensor(1.0))
        assert torch.allclose(c.diff(), c.diff()[0].expand(slots - 1), atol=1e-5)
    for slots, k in ((151, 2), (183, 3), (20, 4)):
        c = fixed_codes(slots, k)
        assert c.shape == (slots, k)
        assert len({tuple(r) for r in c.tolist()}) == slots  # all distinct
        assert float(c.min()) >= -1.1 - 1e-6 and float(c.max()) <= 1.0 + 1e-6


def test_any_num_classes_and_bad_labels():
    for c in (1, 2, 19, 150, 182):
        y = torch.randint(0, c, (2, 5, 5))
        assert LabelNoiser(c).random(y).shape == (2, 1, 5, 5)
    n = LabelNoiser(19, check_labels=True)  # the debug checks; by default the loaders validate labels
    y = torch.zeros(1, 4, 4, dtype=torch.long)
    y[0, 1, 1] = 19
    with pytest.raises(ValueError, match="19"):
        n.random(y)
    y[0, 1, 1] = -1
    with pytest.raises(ValueError, match="-1"):
        n.fixed(y)
    with pytest.raises(ValueError, match="B, H, W"):
        n.random(torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        n.random(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError):
        LabelNoiser(0)


def test_vectorised_large_class_count_is_fast():
    import time

    y = torch.randint(0, 182, (8, 128, 128))
    n = LabelNoiser(182, code_dim=3)
    t = time.perf_counter()
    out = n.random(y)
    assert time.perf_counter() - t < 2.0
    assert out.shape == (8, 3, 128, 128)


def test_settings_round_trip():
    n = LabelNoiser(7, code_dim=2, sigma=0.05, fixed_sigma=0.01, scale=3.0)
    m = LabelNoiser.from_dict(n.to_dict())
    assert m.to_dict() == n.to_dict()
    partial = {k: v for k, v in n.to_dict().items() if k != "num_classes"}  # as the engine's exports write it
    assert LabelNoiser.from_dict(partial, num_classes=7).to_dict() == n.to_dict()
    with pytest.raises(ValueError, match="num_classes"):
        LabelNoiser.from_dict(partial)
    with pytest.raises(ValueError, match="bogus"):
        LabelNoiser.from_dict({**n.to_dict(), "bogus": 1})
