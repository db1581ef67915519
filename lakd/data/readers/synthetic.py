"""Synthetic segmentation scenes: textured shapes of 7 kinds on a textured background (8 classes).

Deterministic: sample `i` of split `s` is a pure function of (seed, s, i, image_size).

Designed as a demo task for LAD (a teacher that knows the region partition should win), and learnable by a
small CNN in a few hundred steps on a CPU:
- each object class has a shape (disk, square, triangle, ring, cross, ellipse, star) and a typical hue, but
  a quarter of the objects take another class's hue, and textures are shared by all classes: colour is a
  strong but fallible cue, the outline settles the class;
- 0-2 "distractors" per image, shapes painted in object colours (a bit paler and flatter) that are labelled
  background: from the image alone they are hard to tell from objects, while the region partition (LAD's
  label input) shows at once that they belong to the background region;
- the background is a low-saturation texture; objects overlap and are cut by the border; blur, noise and
  brightness changes are added. Small image-only models stay well below 100% mIoU.
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


# ----------------------------------------------------------------------------------------------- generator
_TEXTURES = ("stripes", "checker", "dots", "blobs", "waves")
# class k (1..7): a shape and a typical hue; an instance keeps its class's shape but takes another class's hue
# with probability _OFF_HUE, so colour is a strong but fallible cue and the outline settles the class
_HUES = {c: (c - 1) / 7.0 for c in range(1, NUM_CLASSES)}
_OFF_HUE = 0.25
_DISTRACTORS = (0, 3)  # coloured shapes that belong to the background (painted, not objects)


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


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255


def _object_colours(rng: np.random.Generator, hue: float, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    h = hue + rng.normal(0, 0.025)
    s = rng.uniform(0.55, 1.0)
    v = rng.uniform(0.55, 1.0)
    return _hsv(h, s, v), _hsv(h + rng.normal(0, 0.02), s * rng.uniform(0.7, 1.0), v * (1 - contrast))


def _shape_mask(cls: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    r = rng.uniform(0.17, 0.36) * size
    cy, cx = rng.uniform(0.05, 0.95, 2) * size
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
    """(HxWx3 uint8 image, HxW uint8 label) of synthetic sample `index`.

    Background: a low-saturation texture. Objects (2-5): class shape, class hue (or, 25% of the time, another
    class's hue), random texture. Distractors (0-2): object-like painted shapes that are labelled background;
    they are slightly paler and flatter than real objects, so the image alone tells them apart only with
    difficulty, while the region partition (LAD's label input) shows at once that they belong to the
    background region.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(split_code), int(index), 0x5E7])))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg_kind = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    bg_pat = _texture(rng, bg_kind, yy, xx, size)
    h = rng.random()
    b1 = _hsv(h, rng.uniform(0.0, 0.25), rng.uniform(0.35, 0.8))
    b2 = _hsv(h + rng.normal(0, 0.05), rng.uniform(0.0, 0.25), rng.uniform(0.35, 0.8))
    image = bg_pat[..., None] * b1 + (1 - bg_pat[..., None]) * b2
    label = np.zeros((size, size), dtype=np.uint8)
    n_obj = int(rng.integers(2, 6))
    n_dis = int(rng.integers(_DISTRACTORS[0], _DISTRACTORS[1]))
    kinds = [True] * n_obj + [False] * n_dis
    rng.shuffle(kinds)
    for is_object in kinds:
        cls = int(rng.integers(1, NUM_CLASSES))
        mask = _shape_mask(cls, rng, yy, xx, size)
        if mask.sum() < 0.004 * size * size:
            continue
        hue_cls = cls if rng.random() >= _OFF_HUE else int(rng.integers(1, NUM_CLASSES))
        kind = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
        pat = _texture(rng, kind, yy, xx, size)
        if is_object:
            c1, c2 = _object_colours(rng, _HUES[hue_cls], rng.uniform(0.25, 0.6))
        else:  # distractor: paler and flatter
            c1, c2 = _object_colours(rng, _HUES[hue_cls], rng.uniform(0.1, 0.3))
            c1, c2 = 0.75 * c1 + 0.25 * b1, 0.75 * c2 + 0.25 * b1
        obj = pat[..., None] * c1 + (1 - pat[..., None]) * c2
        image = np.where(mask[..., None], obj, image)
        label[mask] = cls if is_object else 0
    # global photometric nuisance: brightness/contrast, blur, noise
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
    im = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 0.8))))
    image = np.asarray(im, dtype=np.float32) + rng.normal(0, rng.uniform(3, 8), (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label
