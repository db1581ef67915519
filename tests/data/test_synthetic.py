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
    """Version 3: every class occurs, an object's colour is its class's colour, and some background pixels are
    painted like objects (the distractors that only the region partition tells apart)."""
    hist = np.zeros(8, np.int64)
    colour_hits, objects, with_distractor = 0, 0, 0
    for i in range(60):
        img, lab = synthetic.generate(i, 64, seed=0)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert lab.shape == (64, 64) and lab.dtype == np.uint8 and lab.max() < 8
        hist += np.bincount(lab.ravel(), minlength=8)
        pix = img.reshape(-1, 3).astype(np.float32)
        nearest = np.argmin(((pix[:, None, :] - synthetic._COLOURS[None]) ** 2).sum(-1), 1).reshape(64, 64) + 1
        close = (((pix - synthetic._COLOURS[nearest.ravel() - 1]) ** 2).sum(-1) < 60 ** 2).reshape(64, 64)
        for c in range(1, 8):
            m = lab == c
            if m.sum() < 30:
                continue
            objects += 1
            colour_hits += int(np.bincount(nearest[m], minlength=8).argmax() == c)
        with_distractor += int((close & (lab == 0)).sum() > 30)
    share = hist / hist.sum()
    assert (share > 0.02).all(), share  # every class occurs
    assert 0.5 < share[0] < 0.85, share  # background dominates, but not overwhelmingly
    assert colour_hits / objects > 0.95  # colour settles the class
    assert with_distractor / 60 > 0.5  # most images hold a distractor: object-coloured background
