"""Synthetic segmentation scenes: textured shapes of 7 kinds on a textured background (8 classes).

Deterministic: sample `i` of split `s` is a pure function of (seed, s, i, image_size).

Designed as a demo task for LAD (a teacher that knows the region partition should win):
- every region (objects and background) gets a random texture from the same family pool and random colours,
  with only a weak class preference, so a local patch says little about the class;
- the class is carried by the *outline* of the region (disk, square, triangle, ring, cross, ellipse, star);
- about a third of the objects use the background's own colours (faint boundaries), objects overlap and
  are cut by the image border, and blur + noise are applied, so a small image-only model stays well below
  100% mIoU, while the exact partition (what the LAD teacher gets) makes the outline obvious.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

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


def iter_samples(root, split: str, **opts):
    for ref in list_samples(root, split, **opts):
        yield read_sample(ref)


# ----------------------------------------------------------------------------------------------- generator
_TEXTURES = ("stripes", "checker", "dots", "blobs", "waves")
# weak preference: with probability _PREF an object uses its class's texture, otherwise a random one
_CLASS_TEXTURE = {1: "stripes", 2: "checker", 3: "dots", 4: "blobs", 5: "waves", 6: "stripes", 7: "checker"}
_PREF = 0.35


def _texture(rng: np.random.Generator, kind: str, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """A pattern in [0, 1] over the grid."""
    freq = rng.uniform(2.0, 9.0) / size * 2 * np.pi
    ang = rng.uniform(0, np.pi)
    u = xx * np.cos(ang) + yy * np.sin(ang)
    v = -xx * np.sin(ang) + yy * np.cos(ang)
    ph = rng.uniform(0, 2 * np.pi)
    if kind == "stripes":
        return 0.5 + 0.5 * np.sin(freq * u + ph)
    if kind == "checker":
        return ((np.sin(freq * u + ph) * np.sin(freq * v)) > 0).astype(np.float32) * 0.8 + 0.1
    if kind == "dots":
        d = np.sin(freq * u + ph) * np.sin(freq * v)
        return np.clip(d * 3, 0, 1)
    if kind == "waves":
        return 0.5 + 0.5 * np.sin(freq * u + 2.5 * np.sin(freq * 0.5 * v) + ph)
    # blobs: smooth random noise
    g = max(2, int(rng.integers(3, 9)))
    small = rng.random((g, g)).astype(np.float32)
    im = Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32) / 255.0


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    c1 = rng.uniform(0, 255, 3)
    c2 = np.clip(c1 + rng.normal(0, 70, 3), 0, 255)
    return c1, c2


def _shape_mask(cls: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    r = rng.uniform(0.15, 0.38) * size
    cy, cx = rng.uniform(0.0, 1.0, 2) * size
    th = rng.uniform(0, 2 * np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(th) + dy * np.sin(th)
    v = -dx * np.sin(th) + dy * np.cos(th)
    d = np.sqrt(u * u + v * v)
    if cls == 1:  # disk
        return d < r
    if cls == 2:  # square
        return (np.abs(u) < 0.85 * r) & (np.abs(v) < 0.85 * r)
    if cls == 3:  # triangle (equilateral, circumradius r)
        m = np.ones_like(d, dtype=bool)
        for k in range(3):
            a = th + k * 2 * np.pi / 3
            m &= (dx * np.cos(a) + dy * np.sin(a)) < 0.5 * r
        return m
    if cls == 4:  # ring
        return (d < r) & (d > 0.55 * r)
    if cls == 5:  # cross
        w = 0.32 * r
        return ((np.abs(u) < w) & (np.abs(v) < r)) | ((np.abs(v) < w) & (np.abs(u) < r))
    if cls == 6:  # ellipse
        return (u / r) ** 2 + (v / (0.45 * r)) ** 2 < 1
    # star: 5 points
    phi = np.arctan2(v, u)
    return d < r * (0.62 + 0.38 * np.cos(5 * phi))


def generate(index: int, size: int, seed: int, split_code: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 image, HxW uint8 label) of synthetic sample `index`."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(split_code), int(index), 0x5E6])))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg_kind = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    bg_pat = _texture(rng, bg_kind, yy, xx, size)
    b1, b2 = _colours(rng)
    image = bg_pat[..., None] * b1 + (1 - bg_pat[..., None]) * b2
    label = np.zeros((size, size), dtype=np.uint8)
    n_obj = int(rng.integers(2, 6))
    for _ in range(n_obj):
        cls = int(rng.integers(1, NUM_CLASSES))
        mask = _shape_mask(cls, rng, yy, xx, size)
        if mask.sum() < 0.004 * size * size:
            continue
        kind = _CLASS_TEXTURE[cls] if rng.random() < _PREF else _TEXTURES[int(rng.integers(len(_TEXTURES)))]
        pat = _texture(rng, kind, yy, xx, size)
        if rng.random() < 0.35:  # faint boundary: reuse the background colours
            c1, c2 = b1 + rng.normal(0, 12, 3), b2 + rng.normal(0, 12, 3)
        else:
            c1, c2 = _colours(rng)
        obj = pat[..., None] * c1 + (1 - pat[..., None]) * c2
        image = np.where(mask[..., None], obj, image)
        label[mask] = cls
    # global photometric nuisance: brightness/contrast, blur, noise
    image = image * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20)
    im = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    image = np.asarray(im, dtype=np.float32) + rng.normal(0, rng.uniform(4, 14), (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label
