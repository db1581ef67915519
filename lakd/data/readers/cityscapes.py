"""Cityscapes: `leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` + `gtFine/<split>/<city>/<name>_gtFine_labelIds.png`.

labelIds 0..33 -> 19 train ids (7->0, 8->1, 11->2, ..., 33->18), every other id -> ignore (see the card).
"""
from __future__ import annotations

from pathlib import Path

from lakd.data.readers.base import FileRef, read_file_pair, require_dir

NAME = "cityscapes"
SPLITS = ("train", "val", "test")


def list_samples(root: Path, split: str) -> list[FileRef]:
    root = Path(root)
    img_dir = require_dir(root / "leftImg8bit" / split, f"{NAME} {split} images")
    refs = []
    for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
        name = img.name[: -len("_leftImg8bit.png")]
        lab = root / "gtFine" / split / img.parent.name / f"{name}_gtFine_labelIds.png"
        refs.append(FileRef(name, str(img), str(lab)))
    return refs


def read_sample(ref: FileRef):
    return read_file_pair(ref, NAME)
