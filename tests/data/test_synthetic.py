"""The synthetic generator: deterministic, every class present, no trivial colour shortcut."""
from __future__ import annotations

import numpy as np

from lakd.data.readers import synthetic


def test_deterministic_and_seeded():
    a = synthetic.generate(3, 48, seed=1)
    b = synthetic.generate(3, 48, seed=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], synthetic.generate(3, 48, seed=2)[0])
    assert not np.array_equal(a[0], synthetic.generate(3, 48, seed=1, split_code=1)[0])
    assert synthetic.read_sample(synthetic.list_samples(None, "train", num_samples=1, image_size=32)[0]).image_bytes \
        == synthetic.read_sample(synthetic.list_samples(None, "train", num_samples=1, image_size=32)[0]).image_bytes


def test_classes_balance_and_cues():
    import colorsys

    hist = np.zeros(8, np.int64)
    hue_hits, objects, painted_bg = 0, 0, 0
    for i in range(40):
        img, lab = synthetic.generate(i, 64, seed=0)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert lab.shape == (64, 64) and lab.dtype == np.uint8 and lab.max() < 8
        hist += np.bincount(lab.ravel(), minlength=8)
        hsv = np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in img.reshape(-1, 3)]).reshape(64, 64, 3)
        for c in range(1, 8):
            m = lab == c
            if m.sum() < 30:
                continue
            objects += 1
            h = hsv[..., 0][m]
            mean_hue = np.angle(np.exp(2j * np.pi * h).mean()) / (2 * np.pi) % 1.0
            dist = [min(abs(mean_hue - (k - 1) / 7), 1 - abs(mean_hue - (k - 1) / 7)) for k in range(1, 8)]
            hue_hits += int(np.argmin(dist) + 1 == c)
        painted_bg += int((hsv[..., 1][lab == 0] > 0.45).mean() > 0.02)
    share = hist / hist.sum()
    assert (share > 0.02).all(), share  # every class is well represented
    assert share[0] < 0.8
    # colour is a strong but fallible cue: most objects have their class's hue, not all
    assert 0.55 < hue_hits / objects < 0.95, hue_hits / objects
    # coloured distractor shapes that belong to the background appear in a good share of the images
    assert 0.2 < painted_bg / 40 < 0.9, painted_bg
