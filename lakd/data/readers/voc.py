"""PASCAL VOC 2012 + SBD augmentation ("VOCAug").

`root` is the VOC2012 folder (or VOCdevkit / its parent) holding `JPEGImages/<id>.jpg`,
`SegmentationClassAug/<id>.png` (train_aug labels, grey or palette index PNGs) and
`SegmentationClass/<id>.png` (official palette PNGs, used for val when present).
Split lists are looked up as `ImageSets/Segmentation/<list>.txt`, `ImageSets/SegmentationAug/<list>.txt`,
`<root>/<list>.txt` or `<root>/list/<list>.txt`.
Splits: `train` and `train_aug` (the 10,582-image train_aug list), `val` (1,449), `trainval_aug`.
Palette PNGs are read as indices (never converted); 255 (void/border) -> ignore; 0..20 are the 21 classes.
"""
from __future__ import annotations

from pathlib import Path

from lakd.data.readers.base import FileRef, read_file_pair, read_list, require_dir

NAME = "voc"
SPLITS = ("train", "train_aug", "val", "trainval_aug")
_LISTS = {"train": "train_aug", "train_aug": "train_aug", "val": "val", "trainval_aug": "trainval_aug"}


def _base(root: Path) -> Path:
    root = Path(root)
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012", root / "VOCAug"):
        if (cand / "JPEGImages").is_dir():
            return cand
    return require_dir(root / "JPEGImages", f"{NAME} images").parent


def _list_file(base: Path, name: str) -> Path:
    cands = [base / "ImageSets" / "Segmentation" / f"{name}.txt",
             base / "ImageSets" / "SegmentationAug" / f"{name}.txt",
             base / f"{name}.txt", base / "list" / f"{name}.txt", base.parent / f"{name}.txt"]
    for c in cands:
        if c.is_file():
            return c
    raise ValueError(f"{NAME}: split list {name}.txt not found (looked in: {', '.join(str(c) for c in cands)})")


def list_samples(root: Path, split: str) -> list[FileRef]:
    base = _base(root)
    ids = read_list(_list_file(base, _LISTS[split]))
    aug = base / "SegmentationClassAug"
    if split == "val" and (base / "SegmentationClass").is_dir():
        lab_dir = base / "SegmentationClass"
    else:
        lab_dir = require_dir(aug, f"{NAME} {split} labels (SegmentationClassAug)")
    # list lines may be "<id>" or "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png"
    names = sorted({Path(line.split()[0]).stem for line in ids})
    return [FileRef(i, str(base / "JPEGImages" / f"{i}.jpg"), str(lab_dir / f"{i}.png")) for i in names]


def read_sample(ref: FileRef):
    return read_file_pair(ref, NAME)
