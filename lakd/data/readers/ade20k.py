"""ADE20K (ADEChallengeData2016): `images/{training,validation}/*.jpg` + `annotations/.../<same stem>.png`.

Annotation 0 ("other") -> ignore, 1..150 -> 0..149. `root` may be ADEChallengeData2016 or its parent.
"""
from __future__ import annotations

from pathlib import Path

from lakd.data.readers.base import FileRef, read_file_pair, require_dir

NAME = "ade20k"
SPLITS = ("train", "val")
_DIRS = {"train": "training", "val": "validation"}


def _base(root: Path) -> Path:
    root = Path(root)
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        return root / "ADEChallengeData2016"
    return root


def list_samples(root: Path, split: str) -> list[FileRef]:
    base = _base(root)
    d = _DIRS[split]
    img_dir = require_dir(base / "images" / d, f"{NAME} {split} images")
    return [FileRef(img.stem, str(img), str(base / "annotations" / d / f"{img.stem}.png"))
            for img in sorted(img_dir.glob("*.jpg"))]


def read_sample(ref: FileRef):
    return read_file_pair(ref, NAME)
