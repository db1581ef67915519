"""Task variants of the label-use investigation (docs/method.md section 6). Each `gen_*` returns
(HxWx3 uint8 image, HxW uint8 label) for sample `index`, deterministic in (seed, split_code, index).

- `v2`: the retired synthetic version 2 (lakd before issue 12), kept here verbatim so the measurements rerun;
- `v3*`, `v4*`: v2-style scenes with indistinguishable distractors (textured / flat objects, distractor shares);
- `v5*`: flat, far-apart colours on grey block noise; `v5p40` (40% distractors) became synthetic version 3
  (`lakd.data.readers.synthetic`, task name `synthetic` in label_use.py).
"""
import numpy as np
from PIL import Image, ImageFilter

NUM_CLASSES = 8

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


def gen_v2(index: int, size: int, seed: int, split_code: int = 0) -> tuple[np.ndarray, np.ndarray]:
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


# ------------------------------------------------------------------- variants tried for version 3

NUM = NUM_CLASSES
def gen_v3(index, size, seed, split_code=0, n_obj=(2, 5), n_dis=(1, 3), hue_jit=0.02, alternate=False, flat=False):
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(split_code), int(index), 0x5E73])))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg_pat = _texture(rng, _TEXTURES[int(rng.integers(len(_TEXTURES)))], yy, xx, size)
    h = rng.random()
    b1 = _hsv(h, rng.uniform(0.0, 0.2), rng.uniform(0.35, 0.8)); b2 = _hsv(h + rng.normal(0, 0.05), rng.uniform(0.0, 0.2), rng.uniform(0.35, 0.8))
    image = bg_pat[..., None] * b1 + (1 - bg_pat[..., None]) * b2
    label = np.zeros((size, size), np.uint8)
    kinds = [True] * int(rng.integers(*n_obj)) + [False] * int(rng.integers(*n_dis))
    rng.shuffle(kinds)
    if alternate:
        kinds = [i % 2 == 0 for i in range(int(rng.integers(2, 6)))]
    for is_object in kinds:
        cls = int(rng.integers(1, NUM)); shape = int(rng.integers(1, NUM))
        mask = _shape_mask(shape, rng, yy, xx, size)
        if mask.sum() < 0.004 * size * size: continue
        pat = _texture(rng, _TEXTURES[int(rng.integers(len(_TEXTURES)))], yy, xx, size)
        c1, c2 = _object_colours(rng, _HUES[cls], rng.uniform(0.2, 0.5))
        if flat: c2 = c1
        obj = pat[..., None] * c1 + (1 - pat[..., None]) * c2
        image = np.where(mask[..., None], obj, image)
        label[mask] = cls if is_object else 0
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
    im = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 0.8))))
    image = np.asarray(im, np.float32) + rng.normal(0, rng.uniform(3, 8), (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def gen_v4(index, size, seed, split_code=0, n_obj=(2, 5), n_dis=(1, 4), rmin=0.12, rmax=0.25, tex=True):
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(split_code), int(index), 0x5E74])))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    h = rng.random()
    b1 = _hsv(h, rng.uniform(0.0, 0.2), rng.uniform(0.35, 0.75)); b2 = _hsv(h + rng.normal(0, 0.05), rng.uniform(0.0, 0.2), rng.uniform(0.35, 0.75))
    pat = _texture(rng, _TEXTURES[int(rng.integers(len(_TEXTURES)))], yy, xx, size) if tex else np.zeros((size, size), np.float32)
    image = pat[..., None] * b1 + (1 - pat[..., None]) * b2
    label = np.zeros((size, size), np.uint8)
    kinds = [True] * int(rng.integers(*n_obj)) + [False] * int(rng.integers(*n_dis))
    rng.shuffle(kinds)
    for is_object in kinds:
        cls = int(rng.integers(1, NUM))
        r = rng.uniform(rmin, rmax) * size
        cy, cx = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            m = (abs(yy - cy) < r * 0.85) & (abs(xx - cx) < r * 0.85)
        col = _hsv(_HUES[cls] + rng.normal(0, 0.02), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
        image = np.where(m[..., None], col + rng.normal(0, 8, 3), image)
        label[m] = cls if is_object else 0
    image = image + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


COLS = np.array([[220, 50, 50], [50, 200, 50], [50, 80, 230], [230, 220, 50], [50, 210, 220], [210, 60, 210], [240, 240, 240]], np.float32)
def gen_v5(index, size, seed, split_code=0, n=(2, 7), p_dis=0.5):
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(split_code), int(index), 0x5E75])))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = rng.uniform(70, 150, 3).mean() + rng.normal(0, 8, 3)
    cells = size // 8 + 1
    low = np.kron(rng.normal(0, 1, (cells, cells, 3)), np.ones((8, 8, 1)))[:size, :size]
    img = bg + 15 * low
    lab = np.zeros((size, size), np.uint8)
    k = int(rng.integers(*n))
    kinds = [i % 2 == 0 for i in range(k)] if p_dis == 0.5 else list(rng.random(k) >= p_dis)
    for is_obj in kinds:
        cls = int(rng.integers(1, NUM))
        r = rng.uniform(0.125, 0.25) * size
        cy, cx = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            m = (abs(yy - cy) < r * 0.85) & (abs(xx - cx) < r * 0.85)
        img[m] = COLS[cls - 1] + rng.normal(0, 15, 3)
        lab[m] = cls if is_obj else 0
    img = img + rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def _synthetic_v3(index, size, seed, split_code=0):
    from lakd.data.readers.synthetic import generate

    return generate(index, size, seed, split_code)


TASKS = {
    "v2": gen_v2,
    "v3": gen_v3,
    "v3c": lambda i, size, seed: gen_v3(i, size, seed, alternate=True),
    "v3d": lambda i, size, seed: gen_v3(i, size, seed, alternate=True, flat=True),
    "v4": gen_v4,
    "v4b": lambda i, size, seed: gen_v4(i, size, seed, n_obj=(2, 5), n_dis=(2, 5)),
    "v5": gen_v5,
    "v5p40": lambda i, size, seed: gen_v5(i, size, seed, p_dis=0.4),
    "synthetic": _synthetic_v3,  # = v5p40's design, as shipped (lakd.data.readers.synthetic, version 3)
}


def get(task, size, seed):
    """(index -> (image, label), number of classes) of a task of this file."""
    gen = TASKS[task]
    return (lambda i: gen(i, size, seed)), NUM_CLASSES
