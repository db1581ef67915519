"""What every reader shares: the sample type, label decoding and id mapping, image checks."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

from lakd.data.cards import get_card

# image formats stored as they are (bytes passed through); anything else is re-encoded as PNG
PASSTHROUGH = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


class RawSample(NamedTuple):
    key: str
    image_bytes: bytes
    image_ext: str
    label: np.ndarray  # HxW uint8 train ids, 255 = ignore


class BadSample(ValueError):
    """Bad input for one sample (missing file, unreadable image, size mismatch, ids outside the mapping)."""


@dataclass(frozen=True)
class FileRef:
    """A raw sample made of an image file and a label file."""
    key: str
    image: str
    label: str


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ValueError(f"{what}: directory not found: {path}")
    return path


def read_bytes(path: str | os.PathLike, key: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise BadSample(f"sample {key}: {what} file missing: {path}") from None
    except OSError as exc:
        raise BadSample(f"sample {key}: cannot read {what} file {path}: {exc}") from None


def load_image(data: bytes, key: str, path: str = "") -> tuple[bytes, str, tuple[int, int]]:
    """Check that `data` decodes as an image; returns (bytes to store, extension, (width, height)).

    JPEG/PNG/WebP bytes are passed through unchanged; other formats are re-encoded as PNG.
    """
    where = f" ({path})" if path else ""
    try:
        im = Image.open(io.BytesIO(data))
        fmt = im.format
        im.load()
    except Exception as exc:
        raise BadSample(f"sample {key}: unreadable image{where}: {type(exc).__name__}: {exc}") from None
    if fmt in PASSTHROUGH:
        return data, PASSTHROUGH[fmt], im.size
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG")
    return buf.getvalue(), "png", im.size


def decode_raw_label(data: bytes, key: str, path: str = "") -> np.ndarray:
    """Decode a label image to its raw values: palette PNGs give indices, 8/16-bit grey gives values."""
    where = f" ({path})" if path else ""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as exc:
        raise BadSample(f"sample {key}: unreadable label{where}: {type(exc).__name__}: {exc}") from None
    if im.mode == "P":
        return np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(im.size[1], im.size[0])
    if im.mode in ("L", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(im)
    raise BadSample(f"sample {key}: label{where} has mode {im.mode}; expected a single-channel id map "
                    f"(grayscale or palette PNG), not a colour rendering")


def map_ids(raw: np.ndarray, dataset: str, key: str) -> np.ndarray:
    """Raw annotation values -> uint8 train ids using the dataset card; ids outside the mapping are an error."""
    return apply_lookup(raw, lambda size: _lut(dataset, size), key, f"outside the {get_card(dataset).name} mapping")


def apply_lookup(raw: np.ndarray, lookup: Callable[[int], np.ndarray], key: str, unmapped: str) -> np.ndarray:
    """Raw ids -> uint8 train ids through ``lookup(size)`` (a table over 256 or 65536 raw values, -1 where an id
    has no train id); such ids make the sample bad, the message saying ``label ids <unmapped>: <ids>``."""
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise BadSample(f"sample {key}: label must be 2-D, got shape {raw.shape}")
    if raw.size and (raw.min() < 0 or raw.max() > 65535):
        raise BadSample(f"sample {key}: label values outside 0..65535")
    out = lookup(256 if raw.dtype == np.uint8 else 65536)[raw.astype(np.intp, copy=False)]
    if (out < 0).any():
        bad = np.unique(raw[out < 0])
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise BadSample(f"sample {key}: label ids {unmapped}: {shown}")
    return out.astype(np.uint8)


_LUTS: dict = {}


def _lut(dataset: str, size: int) -> np.ndarray:
    k = (dataset, size)
    if k not in _LUTS:
        _LUTS[k] = get_card(dataset).lookup_table(size)
    return _LUTS[k]


def read_file_pair(ref: FileRef, dataset: str) -> RawSample:
    """The common case: an image file + a label image of raw ids."""
    img = read_bytes(ref.image, ref.key, "image")
    lab = read_bytes(ref.label, ref.key, "label")
    data, ext, (w, h) = load_image(img, ref.key, ref.image)
    raw = decode_raw_label(lab, ref.key, ref.label)
    check_size(raw, w, h, ref.key)
    return RawSample(ref.key, data, ext, map_ids(raw, dataset, ref.key))


def check_size(label: np.ndarray, w: int, h: int, key: str) -> None:
    if label.shape != (h, w):
        raise BadSample(f"sample {key}: label size {label.shape[1]}x{label.shape[0]} != image size {w}x{h}")


def read_list(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a list file."""
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def first_existing(*paths: Path) -> Path | None:
    for p in paths:
        if p.exists():
            return p
    return None
