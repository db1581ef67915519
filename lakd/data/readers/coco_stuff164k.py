"""COCO-Stuff 164K: `images/{train2017,val2017}/<id>.jpg` + raw stuffthingmaps `annotations/{...}/<id>.png`.

Also accepted: the official unzip layout (`train2017/`, `val2017/` next to `stuffthingmaps_trainval2017/`).
An optional list `coco_stuff_164k_<split>.txt` (ids, one a line) in `root` restricts the samples.
Raw ids 0..181 (COCO category id - 1; 11 of them unused) -> 171 contiguous train ids; 255 -> ignore.
"""
from __future__ import annotations

from pathlib import Path

from lakd.data.readers.base import FileRef, first_existing, read_file_pair, read_list

NAME = "coco_stuff164k"
SPLITS = ("train", "val")
_DIRS = {"train": "train2017", "val": "val2017"}


def list_samples(root: Path, split: str) -> list[FileRef]:
    root = Path(root)
    d = _DIRS[split]
    img_dir = first_existing(root / "images" / d, root / d)
    lab_dir = first_existing(root / "annotations" / d, root / "stuffthingmaps_trainval2017" / d,
                             root / "stuffthingmaps" / d)
    if img_dir is None or lab_dir is None:
        raise ValueError(f"{NAME} {split}: expected {root}/images/{d} and {root}/annotations/{d} "
                         f"(or {d}/ + stuffthingmaps_trainval2017/{d})")
    lst = root / f"coco_stuff_164k_{split}.txt"
    if lst.is_file():
        ids = sorted({Path(x.split()[0]).stem for x in read_list(lst)})
    else:
        ids = sorted(p.stem for p in img_dir.glob("*.jpg"))
    return [FileRef(i, str(img_dir / f"{i}.jpg"), str(lab_dir / f"{i}.png")) for i in ids]


def read_sample(ref: FileRef):
    return read_file_pair(ref, NAME)
