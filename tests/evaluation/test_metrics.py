"""Confusion-matrix metrics against brute-force numpy, ignore handling, absent classes, merging ranks."""
import numpy as np
import pytest
import torch

from lakd import IGNORE_INDEX
from lakd.evaluation.metrics import ConfusionMatrix, metrics_from_confusion


def brute_force(preds, labels, C, ignore=IGNORE_INDEX):
    """Per-class IoU / accuracies from explicit per-class pixel sets (numpy, no confusion matrix)."""
    p = np.concatenate([x.ravel() for x in preds])
    y = np.concatenate([x.ravel() for x in labels])
    keep = y != ignore
    p, y = p[keep], y[keep]
    ious, present, accs = [], [], []
    for c in range(C):
        inter = np.sum((p == c) & (y == c))
        union = np.sum((p == c) | (y == c))
        ious.append(inter / union if union else 0.0)
        present.append(union > 0)
        if np.sum(y == c):
            accs.append(inter / np.sum(y == c))
    ious = np.array(ious)
    present = np.array(present)
    return {"iou": ious, "present": present, "miou": ious[present].mean(), "miou_all": ious.mean(),
            "acc": np.mean(p == y), "macc": np.mean(accs)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_numpy(seed):
    rng = np.random.default_rng(seed)
    C = 7
    cm = ConfusionMatrix(C)
    preds, labels = [], []
    for _ in range(4):
        h, w = rng.integers(5, 20, 2)
        y = rng.integers(0, C, (2, h, w))
        y[rng.random((2, h, w)) < 0.2] = IGNORE_INDEX
        y[y == 5] = 6  # class 5 never in the ground truth ...
        p = rng.integers(0, C, (2, h, w))
        p[p == 3] = 4  # ... class 3 never predicted
        cm.update(torch.from_numpy(p), torch.from_numpy(y))
        preds.append(p)
        labels.append(y)
    got = cm.compute()
    ref = brute_force(preds, labels, C)
    assert got["miou"] == pytest.approx(ref["miou"], abs=1e-12)
    assert got["miou_all"] == pytest.approx(ref["miou_all"], abs=1e-12)
    assert got["acc"] == pytest.approx(ref["acc"], abs=1e-12)
    assert got["macc"] == pytest.approx(ref["macc"], abs=1e-12)
    for c in range(C):
        assert got["iou"][c] == pytest.approx(ref["iou"][c], abs=1e-12)
    assert got["pixels"] == sum(int((y != IGNORE_INDEX).sum()) for y in labels)
    assert cm.mat.dtype == torch.int64


def test_logits_are_argmaxed_and_ignore_pixels_do_not_count():
    y = torch.tensor([[[0, 1], [IGNORE_INDEX, 1]]])
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2, 1, 0] = 5  # the ignore pixel predicted as class 2: must not count
    logits[0, 1, :, 1] = 5
    cm = ConfusionMatrix(3)
    cm.update(logits, y)
    m = cm.compute()
    assert m["pixels"] == 3 and m["acc"] == 1.0
    assert m["iou"] == [1.0, 1.0, None] and m["present"] == [0, 1]
    assert m["miou"] == 1.0 and m["miou_all"] == pytest.approx(2 / 3)


def test_absent_class_conventions():
    # class 2 neither in GT nor predicted: left out of miou, counted as 0 in miou_all (reference code)
    m = metrics_from_confusion(torch.tensor([[3, 1, 0], [1, 3, 0], [0, 0, 0]]))
    assert m["iou"][2] is None and m["class_acc"][2] is None
    assert m["miou"] == pytest.approx(0.6)
    assert m["miou_all"] == pytest.approx(0.4)
    # a class predicted but never in GT: present, IoU 0, but no class accuracy
    m = metrics_from_confusion(torch.tensor([[3, 1, 1], [0, 4, 0], [0, 0, 0]]))
    assert m["iou"][2] == 0.0 and m["class_acc"][2] is None and 2 in m["present"]


def test_bad_input_is_named():
    cm = ConfusionMatrix(4)
    with pytest.raises(ValueError, match="label value 9"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 9))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="predicted class 7"):
        cm.update(torch.full((1, 2, 2), 7), torch.zeros(1, 2, 2, dtype=torch.long))


def test_merge_of_per_rank_matrices_equals_single_pass():
    rng = np.random.default_rng(5)
    C = 5
    samples = [(torch.from_numpy(rng.integers(0, C, (1, 9, 7))), torch.from_numpy(rng.integers(0, C, (1, 9, 7))))
               for _ in range(10)]
    single = ConfusionMatrix(C)
    for p, y in samples:
        single.update(p, y)
    ranks = [ConfusionMatrix(C) for _ in range(3)]
    for i, (p, y) in enumerate(samples):
        ranks[i % 3].update(p, y)
    merged = ConfusionMatrix(C)
    for r in ranks:
        merged.merge(r)
    assert torch.equal(merged.mat, single.mat)
    assert merged.compute() == single.compute()
    assert ConfusionMatrix(C).all_reduce().compute()["pixels"] == 0  # no process group: a no-op
