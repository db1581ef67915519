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


def test_classes_and_balance():
    hist = np.zeros(8, np.int64)
    colour_by_class = {c: [] for c in range(8)}
    for i in range(60):
        img, lab = synthetic.generate(i, 64, seed=0)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert lab.shape == (64, 64) and lab.dtype == np.uint8 and lab.max() < 8
        hist += np.bincount(lab.ravel(), minlength=8)
        for c in np.unique(lab):
            colour_by_class[int(c)].append(img[lab == c].mean(0))
    share = hist / hist.sum()
    assert (share > 0.02).all(), share  # every class is well represented
    assert share[0] < 0.75
    # mean colour of a region says little about its class: the per-class mean colours are close together
    # compared with the spread within a class
    centroids = np.array([np.mean(v, 0) for v in colour_by_class.values()])
    spread = np.mean([np.std(np.array(v), 0).mean() for v in colour_by_class.values()])
    assert np.ptp(centroids, axis=0).max() < 2 * spread
