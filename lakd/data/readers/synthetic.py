"""Synthetic segmentation scenes (version 3, "distractor scenes"): coloured blobs on a noisy grey background, 8 classes.

Deterministic: sample `i` of split `s` is a pure function of (seed, s, i, image_size).

Designed so that the demo shows what LAD's label input is worth, and so that small CNNs learn it in about a
thousand CPU steps:
- each object class (1..7) has its own colour (red, green, blue, yellow, cyan, magenta, white, with noise); blobs
  are disks or squares of random size and place, and overlap;
- 40% of the blobs are *distractors*: painted exactly like objects of a random class but labelled background.
  From the image alone a blob is an object or a distractor with odds 60:40, so an image-only model cannot do
  better than guessing "object" (about 45-50 mIoU in the demo's budget). The region partition that LAD's
  noised label gives the teacher separates them at once: an object is a region of its own, a distractor is part
  of the background region. The label never says *which* class a region is (the codes are random per image);
  the colour does.
Version 2 (shaped, textured objects whose outline settles the class; paler distractors) was retired: the
partition added little that the image did not show, and no teacher measurably used it (docs/method.md
section 6).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lakd.data.readers.base import RawSample

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SPLITS = tuple(SPLIT_CODES)
NUM_CLASSES = 8
DEFAULTS = {"num_samples": {"train": 2000, "val": 200, "test": 200}, "image_size": 128, "seed": 0}
JPEG_QUALITY = 92


@dataclass(frozen=True)
class SyntheticRef:
    key: str
    split: str
    index: int
    image_size: int
    seed: int


def list_samples(root, split: str, *, num_samples: int | None = None, image_size: int | None = None,
                 seed: int | None = None) -> list[SyntheticRef]:
    if split not in SPLIT_CODES:
        raise ValueError(f"synthetic: unknown split {split!r}; known: {', '.join(SPLITS)}")
    n = DEFAULTS["num_samples"][split] if num_samples is None else int(num_samples)
    size = DEFAULTS["image_size"] if image_size is None else int(image_size)
    sd = DEFAULTS["seed"] if seed is None else int(seed)
    if n < 1:
        raise ValueError(f"synthetic: num_samples must be >= 1, got {n}")
    if size < 16:
        raise ValueError(f"synthetic: image_size must be >= 16, got {size}")
    return [SyntheticRef(f"synthetic_{split}_{i:07d}", split, i, size, sd) for i in range(n)]


def read_sample(ref: SyntheticRef) -> RawSample:
    image, label = generate(ref.index, ref.image_size, ref.seed, SPLIT_CODES[ref.split])
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return RawSample(ref.key, buf.getvalue(), "jpg", label)


# ----------------------------------------------------------------------------------------------- generator
VERSION = 3
# object colours of classes 1..7 (RGB): far apart, so colour settles the class
_COLOURS = np.array([[220, 50, 50], [50, 200, 50], [50, 80, 230], [230, 220, 50], [50, 210, 220],
                     [210, 60, 210], [240, 240, 240]], np.float32)
_BLOBS = (2, 7)  # blobs per image: 2..6
_DISTRACTOR_SHARE = 0.4  # chance that a blob is a distractor (labelled background)
_RADIUS = (0.125, 0.25)  # blob radius, as a fraction of the image size
_CELL = 8  # background noise block size in pixels


def generate(index: int, size: int, seed: int, split_code: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 image, HxW uint8 label) of synthetic sample `index` (see the module docstring)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [int(seed), int(split_code), int(index), 0x5E7, VERSION])))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    grey = rng.uniform(70, 150, 3).mean() + rng.normal(0, 8, 3)
    cells = size // _CELL + 1
    blocks = np.kron(rng.normal(0, 1, (cells, cells, 3)), np.ones((_CELL, _CELL, 1)))[:size, :size]
    image = grey + 15 * blocks
    label = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(*_BLOBS))):
        is_object = rng.random() >= _DISTRACTOR_SHARE
        cls = int(rng.integers(1, NUM_CLASSES))
        r = rng.uniform(*_RADIUS) * size
        cy, cx = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            mask = (np.abs(yy - cy) < 0.85 * r) & (np.abs(xx - cx) < 0.85 * r)
        image[mask] = _COLOURS[cls - 1] + rng.normal(0, 15, 3)
        label[mask] = cls if is_object else 0
    image = image + rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label
