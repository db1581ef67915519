"""Decoding and augmentation of one sample (image bytes + train-id label PNG bytes).

Train augmentation follows the paper / reference code: random scale f in {0.5, 0.6, ..., 2.0}, pad
(image with 0 after normalisation, label with ignore) to at least the crop, random crop, random horizontal
flip, normalisation with mean/std. The crop is computed first and only the cropped window is resized
(PIL `resize(box=...)`), which gives the same pixels as "resize the whole image, then crop" at a
fraction of the cost for large scales.

Labels are always decoded by hand (never through a webdataset image decoder, which would convert palette
PNGs to RGB/L and destroy the class indices).
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from lakd import IGNORE_INDEX
from lakd.config import DataConfig

# 0-255 scale, RGB order
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class CorruptSample(Exception):
    """A sample that cannot be decoded (garbage bytes, wrong label size, ...)."""


# decoded images larger than a cap are refused before decoding (a small PNG can decode to gigabytes). The
# loaders carry the cap (data.max_pixels in `lakd train`, --max-pixels in `lakd eval`) into their workers as
# an argument, so it holds however the workers are started (fork or spawn); this is the default.
MAX_PIXELS = DataConfig.max_pixels


def _open_capped(data: bytes, what: str, max_pixels: int) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises many types for bad data
        raise CorruptSample(f"undecodable {what} ({type(exc).__name__}: {exc})") from None
    if im.width * im.height > max_pixels:
        raise CorruptSample(f"{what} of {im.width}x{im.height} pixels is larger than the cap of {max_pixels} "
                            f"pixels (data.max_pixels in lakd train, --max-pixels in lakd eval)")
    return im


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    im = _open_capped(data, "image", max_pixels)
    try:
        im.load()
        if im.mode != "RGB":
            im = im.convert("RGB")
        return im
    except Exception as exc:  # PIL raises many types for bad data
        raise CorruptSample(f"undecodable image ({type(exc).__name__}: {exc})") from None


def decode_label(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode a label PNG keeping its raw values (mode L; palette images keep their indices)."""
    im = _open_capped(data, "label", max_pixels)
    try:
        im.load()
    except Exception as exc:
        raise CorruptSample(f"undecodable label ({type(exc).__name__}: {exc})") from None
    if im.mode == "P":
        im = Image.frombytes("L", im.size, im.tobytes())
    elif im.mode != "L":
        raise CorruptSample(f"label has mode {im.mode}, expected single-channel uint8")
    return im


def scale_choices(scale_range: tuple[float, float], step: float = 0.1) -> np.ndarray:
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if not (0 < lo <= hi):
        raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
    n = int(math.floor((hi - lo) / step + 1e-6)) + 1
    return np.round(lo + step * np.arange(n), 6)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Per-sample augmentation RNG: a pure function of (seed, epoch, global sample index)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index), 0xA06])))


def norm_tensors(mean, std):
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return m, s


def to_normalized_chw(image: Image.Image, mean_t: torch.Tensor, std_t: torch.Tensor) -> torch.Tensor:
    """RGB PIL image -> FloatTensor[3,H,W] = (x - mean) / std (transposed as uint8: 3x less memory traffic)."""
    hwc = torch.from_numpy(np.array(image, dtype=np.uint8))
    return hwc.permute(2, 0, 1).contiguous().float().sub_(mean_t).div_(std_t)


def train_transform(image: Image.Image, label: Image.Image, rng: np.random.Generator, *, crop_size: tuple[int, int],
                    scales: np.ndarray, mean_t: torch.Tensor, std_t: torch.Tensor,
                    flip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented training crop: (FloatTensor[3,ch,cw] normalised, LongTensor[ch,cw])."""
    if image.size != label.size:
        raise CorruptSample(f"label size {label.size} != image size {image.size}")
    ch, cw = crop_size
    w, h = image.size
    f = float(scales[int(rng.integers(len(scales)))])
    sw, sh = max(1, int(round(w * f))), max(1, int(round(h * f)))
    ph, pw = max(sh, ch), max(sw, cw)
    y0 = int(rng.integers(ph - ch + 1))
    x0 = int(rng.integers(pw - cw + 1))
    do_flip = bool(rng.integers(2)) if flip else False
    vh, vw = min(ch, sh - y0), min(cw, sw - x0)  # part of the crop inside the (scaled) image
    fx, fy = sw / w, sh / h
    box = (x0 / fx, y0 / fy, (x0 + vw) / fx, (y0 + vh) / fy)
    if (sw, sh) == (w, h):
        img = image.crop((x0, y0, x0 + vw, y0 + vh))
        lab = label.crop((x0, y0, x0 + vw, y0 + vh))
    else:
        img = image.resize((vw, vh), Image.BILINEAR, box=box)
        lab = label.resize((vw, vh), Image.NEAREST, box=box)
    x = to_normalized_chw(img, mean_t, std_t)
    y = torch.from_numpy(np.asarray(lab, dtype=np.uint8).astype(np.int64))
    if vh != ch or vw != cw:
        xp = torch.zeros((3, ch, cw), dtype=torch.float32)
        yp = torch.full((ch, cw), IGNORE_INDEX, dtype=torch.int64)
        xp[:, :vh, :vw] = x
        yp[:vh, :vw] = y
        x, y = xp, yp
    if do_flip:
        x = x.flip(-1)
        y = y.flip(-1)
    return x.contiguous(), y.contiguous()


def eval_transform(image: Image.Image, label: Image.Image, *, mean_t: torch.Tensor,
                   std_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole image: (FloatTensor[3,H,W] normalised, LongTensor[H,W])."""
    if image.size != label.size:
        raise CorruptSample(f"label size {label.size} != image size {image.size}")
    x = to_normalized_chw(image, mean_t, std_t)
    y = torch.from_numpy(np.asarray(label, dtype=np.uint8).astype(np.int64))
    return x, y
