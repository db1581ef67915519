"""A small synthetic task on which the region partition carries value, and a fast probe segmentor.

Task ("distractors"): a noisy, blocky background with 2-5 square or round blobs painted in one of three class
colours. Every other blob is a *distractor*: it looks exactly like an object but is labelled background. From
the image alone a coloured blob is an object or a distractor with equal odds, so an image-only model cannot
separate them; the label partition can (an object is a region of its own, a distractor is part of the
background region), without ever telling the class (LAD's codes are random per image and region).

Probe model: a 5-layer conv/BN/ReLU net at output stride 8 (like the registry models) with an auxiliary head.
The registry's tiny CPU variants (e.g. deeplabv3-resnet18 at width 0.125) learn this task far too slowly for a
test budget of about a minute (measured: all-background after 300 steps even when the label code identifies
the class, where this probe reaches 60%); the method under test does not depend on the architecture.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

NUM_CLASSES = 4
COLOURS = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200]], np.float32)
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def _sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = rng.uniform(90, 160, 3)
    cells = size // 8 + 1
    low = np.kron(rng.normal(0, 1, (cells, cells, 3)), np.ones((8, 8, 1)))[:size, :size]
    img = bg + 15 * low
    lab = np.zeros((size, size), np.uint8)
    for i in range(int(rng.integers(2, 6))):
        cls = int(rng.integers(1, NUM_CLASSES))
        r = rng.uniform(8, 16) * size / 64
        cy, cx = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            m = (abs(yy - cy) < r * 0.85) & (abs(xx - cx) < r * 0.85)
        img[m] = COLOURS[cls - 1] + rng.normal(0, 20, 3)
        lab[m] = cls if i % 2 == 0 else 0  # every other blob is a distractor (background)
    img = img + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.float32), lab


def make_split(n: int, seed: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(images FloatTensor[n,3,size,size] normalised with the ImageNet mean/std, labels LongTensor[n,size,size])."""
    rng = np.random.default_rng(seed)
    xs, ys = zip(*(_sample(rng, size) for _ in range(n)))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2)
    return (x - MEAN) / STD, torch.from_numpy(np.stack(ys)).long()


class Probe(nn.Module):
    """conv-BN-ReLU x5 (strides 2,2,2, dilations 2,4), 1x1 classifiers; returns {"logits", "aux_logits"}."""

    def __init__(self, in_channels: int, num_classes: int = NUM_CLASSES, width: int = 16):
        super().__init__()

        def cbr(i, o, s=1, d=1):
            return nn.Sequential(nn.Conv2d(i, o, 3, s, d, d, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        w = width
        self.stem = nn.Sequential(cbr(in_channels, w, 2), cbr(w, 2 * w, 2), cbr(2 * w, 4 * w, 2))
        self.context = nn.Sequential(cbr(4 * w, 4 * w, 1, 2), cbr(4 * w, 4 * w, 1, 4))
        self.classifier = nn.Conv2d(4 * w, num_classes, 1)
        self.aux_classifier = nn.Conv2d(4 * w, num_classes, 1)
        self.config = {"in_channels": in_channels, "num_classes": num_classes}

    def forward(self, x):
        c3 = self.stem(x)
        out = {"logits": self.classifier(self.context(c3)), "aux_logits": None}
        if self.training:
            out["aux_logits"] = self.aux_classifier(c3)
        return out
