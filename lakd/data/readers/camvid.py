"""CamVid (SegNet 11-class version): `<split>/*.png` + `<split>annot/*.png`, optionally listed in
`camvid_<split>_list.txt` (lines "train/x.png trainannot/x.png", as in the reference code).

Annotation 0..10 are the 11 classes, 11 (void) -> ignore.
"""
from __future__ import annotations

from pathlib import Path

from lakd.data.readers.base import FileRef, read_file_pair, read_list, require_dir

NAME = "camvid"
SPLITS = ("train", "val", "test", "trainval")


def list_samples(root: Path, split: str) -> list[FileRef]:
    root = Path(root)
    lst = root / f"camvid_{split}_list.txt"
    if lst.is_file():
        pairs = []
        for line in read_list(lst):
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{lst}: expected 'image label' per line, got {line!r}")
            pairs.append((parts[0].lstrip("/"), parts[1].lstrip("/")))
    elif split == "trainval":
        return list_samples(root, "train") + list_samples(root, "val")
    else:
        img_dir = require_dir(root / split, f"{NAME} {split} images")
        pairs = [(f"{split}/{p.name}", f"{split}annot/{p.name}") for p in sorted(img_dir.glob("*.png"))]
    refs = [FileRef(Path(i).stem, str(root / i), str(root / lab)) for i, lab in pairs]
    return sorted(refs, key=lambda r: r.key)


def read_sample(ref: FileRef):
    return read_file_pair(ref, NAME)
