"""A user's own dataset: images + label PNGs, described by a dataset card (`lakd.data.user_card`).

`lakd shards build folder --card my_card.yaml --root ROOT --split train` reads, under ROOT (the card's `files`
section can rename every part; `{split}` is the split name):

- a list file `{split}.txt` when it exists: one "image label" pair per line (paths relative to ROOT, or
  absolute; separated by whitespace or a tab; `#` comments), or else
- every image (jpg, jpeg, png, webp, bmp, tif) under `images/{split}/` (sub-folders included), each with
  the label `labels/{split}/<same sub-folder>/<image stem><label_suffix>.png`.

Labels are single-channel id maps (grey 8/16-bit or palette PNGs read as indices), mapped to train ids by the
card's raw_to_train / ignore_id. Any split name works (letters, digits, '-', '_').
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lakd.data.readers.base import (RawSample, apply_lookup, check_size, decode_raw_label, load_image, read_bytes,
                                    read_list, require_dir)
from lakd.data.user_card import load_card_file

NAME = "folder"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class _AnySplit(tuple):
    """Every safe split name is valid (the common ones are listed for messages)."""

    def __contains__(self, split) -> bool:
        return isinstance(split, str) and _SPLIT_RE.match(split) is not None


SPLITS = _AnySplit(("train", "val", "test", "trainval"))


@dataclass(frozen=True)
class FolderRef:
    key: str
    image: str
    label: str
    card: str  # the card file: worker processes read the id mapping from it


def _pairs_from_list(root: Path, path: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for i, line in enumerate(read_list(path), start=1):
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts if p.strip()]
        if len(parts) != 2:
            raise ValueError(f"{path}: line {i}: expected 'image label', got {line!r}")
        img, lab = (Path(p) if Path(p).is_absolute() else root / p for p in parts)
        key = str(Path(parts[0]).with_suffix("")).lstrip("/")
        out.append((key, img, lab))
    return out


def _pairs_from_folders(root: Path, split: str, files: dict) -> list[tuple[str, Path, Path]]:
    images = require_dir(root / files["images"].replace("{split}", split), f"{NAME} {split} images")
    labels = require_dir(root / files["labels"].replace("{split}", split), f"{NAME} {split} labels")
    out = []
    for img in sorted(p for p in images.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS):
        rel = img.relative_to(images)
        lab = labels / rel.parent / f"{img.stem}{files['label_suffix']}.png"
        out.append((str(rel.with_suffix("")), img, lab))
    return out


def list_samples(root: Path, split: str, card: str | None = None) -> list[FolderRef]:
    if card is None:
        raise ValueError(f"{NAME}: your dataset card is required (--card FILE)")
    card = str(Path(card).resolve())
    _, files = load_card_file(card)
    root = require_dir(Path(root), f"{NAME} --root")
    lst = root / files["list"].replace("{split}", split)
    pairs = _pairs_from_list(root, lst) if lst.is_file() else _pairs_from_folders(root, split, files)
    keys = [k for k, _, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"{NAME} {split}: two samples named {dup!r} (image paths must differ beyond the extension)")
    return [FolderRef(k, str(i), str(lab), card) for k, i, lab in pairs]


def map_raw(raw: np.ndarray, card, key: str) -> np.ndarray:
    """Raw ids -> uint8 train ids with the card; ids neither mapped nor ignored make the sample bad."""
    return apply_lookup(raw, card.lookup_table, key, "not in the card's raw_to_train or ignore_id")


def read_sample(ref: FolderRef) -> RawSample:
    card, _ = load_card_file(ref.card)
    img = read_bytes(ref.image, ref.key, "image")
    lab = read_bytes(ref.label, ref.key, "label")
    data, ext, (w, h) = load_image(img, ref.key, ref.image)
    raw = decode_raw_label(lab, ref.key, ref.label)
    check_size(raw, w, h, ref.key)
    return RawSample(ref.key, data, ext, map_raw(raw, card, ref.key))

