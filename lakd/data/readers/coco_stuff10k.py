"""COCO-Stuff 10K v1.1: `images/<id>.jpg` + official `annotations/<id>.mat` (variable `S`) +
`imageLists/{train,test}.txt`.

`S`: 0 = unlabeled -> ignore; 1..182 = COCO category ids -> the same 171 train ids as COCO-Stuff 164K.
Splits: `train` (9,000), `test` (1,000; also available as `val`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lakd.data.readers.base import (BadSample, FileRef, RawSample, check_size, load_image, map_ids, read_bytes,
                                    read_list, require_dir)

NAME = "coco_stuff10k"
SPLITS = ("train", "test", "val")
_LISTS = {"train": "train", "test": "test", "val": "test"}


def list_samples(root: Path, split: str) -> list[FileRef]:
    root = Path(root)
    require_dir(root / "images", f"{NAME} images")
    lst = root / "imageLists" / f"{_LISTS[split]}.txt"
    if not lst.is_file():
        raise ValueError(f"{NAME} {split}: list file not found: {lst}")
    ids = sorted({Path(x.split()[0]).stem for x in read_list(lst)})
    return [FileRef(i, str(root / "images" / f"{i}.jpg"), str(root / "annotations" / f"{i}.mat")) for i in ids]


def load_mat_label(path: str, key: str) -> np.ndarray:
    from scipy.io import loadmat

    if not Path(path).is_file():
        raise BadSample(f"sample {key}: label file missing: {path}")
    try:
        d = loadmat(path, variable_names=["S"])
    except Exception as exc:
        raise BadSample(f"sample {key}: unreadable .mat annotation {path}: {type(exc).__name__}: {exc}") from None
    if "S" not in d:
        raise BadSample(f"sample {key}: {path} has no variable 'S'")
    s = np.asarray(d["S"])
    if s.ndim != 2 or not np.issubdtype(s.dtype, np.number):
        raise BadSample(f"sample {key}: 'S' in {path} is not a 2-D label map ({s.dtype} {s.shape})")
    if np.issubdtype(s.dtype, np.floating):
        if not np.all(np.isfinite(s)) or not np.all(s == np.round(s)):
            raise BadSample(f"sample {key}: 'S' in {path} holds non-integer values")
    if s.size and (s.min() < 0 or s.max() > 65535):
        raise BadSample(f"sample {key}: label ids outside the {NAME} mapping: {int(s.min())}..{int(s.max())}")
    return s.astype(np.uint16)


def read_sample(ref: FileRef) -> RawSample:
    img = read_bytes(ref.image, ref.key, "image")
    data, ext, (w, h) = load_image(img, ref.key, ref.image)
    raw = load_mat_label(ref.label, ref.key)
    check_size(raw, w, h, ref.key)
    return RawSample(ref.key, data, ext, map_ids(raw, NAME, ref.key))
