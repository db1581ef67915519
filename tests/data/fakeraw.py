"""Tiny fake raw datasets in the real layouts, with the expected train ids written independently of the
dataset cards (from the published encodings)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

IGN = 255
CITYSCAPES_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
COCO_UNUSED = [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]  # 0-based stuffthingmaps ids that never occur


def cityscapes_map(v: int) -> int:
    return CITYSCAPES_TRAIN.get(v, IGN)


def ade_map(v: int) -> int:
    return IGN if v == 0 else v - 1


def voc_map(v: int) -> int:
    return v  # 0..20 and 255


def coco164_map(v: int) -> int:
    if v == 255:
        return IGN
    return v - sum(1 for u in COCO_UNUSED if u < v)


def coco10_map(v: int) -> int:
    return IGN if v == 0 else coco164_map(v - 1)


def camvid_map(v: int) -> int:
    return IGN if v == 11 else v


def rgb(h: int, w: int, rng) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def save_jpg(path: Path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)


def save_png(path: Path, arr, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L")
    if palette:
        im = im.convert("P")
        pal = []
        for i in range(256):  # a non-identity palette: converting to RGB/L would destroy the ids
            pal += [(i * 37) % 256, (i * 91) % 256, (i * 13) % 256]
        im.putpalette(pal)
    im.save(path, format="PNG")


def label_with(values, h, w, rng) -> np.ndarray:
    """An h x w label using every value of `values` at least once."""
    values = np.asarray(values)
    lab = rng.choice(values, size=h * w)
    lab[: len(values)] = values
    return rng.permutation(lab).reshape(h, w).astype(np.int64)


def make_cityscapes(root: Path, split="train", n=2, h=12, w=16, seed=0):
    rng = np.random.default_rng(seed)
    exp = {}
    for i in range(n):
        city = ["aachen", "bochum"][i % 2]
        name = f"{city}_{i:06d}_000019"
        Image.fromarray(rgb(h, w, rng)).save(_mk(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"))
        lab = label_with(range(34), h, w, rng)
        save_png(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", lab)
        exp[name] = np.vectorize(cityscapes_map)(lab)
    return exp


def make_ade20k(root: Path, split="train", n=2, h=14, w=15, seed=0):
    rng = np.random.default_rng(seed)
    d = {"train": "training", "val": "validation"}[split]
    base = root / "ADEChallengeData2016"
    exp = {}
    for i in range(n):
        name = f"ADE_{d}_{i:08d}"
        save_jpg(base / "images" / d / f"{name}.jpg", rgb(h, w, rng))
        lab = label_with(range(151), h, w, rng)
        save_png(base / "annotations" / d / f"{name}.png", lab)
        exp[name] = np.vectorize(ade_map)(lab)
    return exp


def make_voc(root: Path, n=3, h=16, w=12, seed=0):
    """VOC2012 + SBD: train_aug labels as grey PNGs in SegmentationClassAug, val labels as palette PNGs."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / "VOC2012"
    exp = {"train_aug": {}, "val": {}}
    vals = list(range(21)) + [255]
    for split, lab_dir, palette in (("train_aug", "SegmentationClassAug", False), ("val", "SegmentationClass", True)):
        ids = []
        for i in range(n):
            name = f"2007_{split[:1]}{i:05d}"
            ids.append(name)
            save_jpg(base / "JPEGImages" / f"{name}.jpg", rgb(h, w, rng))
            lab = label_with(vals, h, w, rng)
            save_png(base / lab_dir / f"{name}.png", lab, palette=palette)
            exp[split][name] = np.vectorize(voc_map)(lab)
        lst = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        lst.parent.mkdir(parents=True, exist_ok=True)
        lst.write_text("\n".join(reversed(ids)) + "\n")
    return exp


def make_coco164k(root: Path, split="train", n=2, h=20, w=18, seed=0):
    rng = np.random.default_rng(seed)
    d = {"train": "train2017", "val": "val2017"}[split]
    vals = [v for v in range(182) if v not in COCO_UNUSED] + [255]
    exp = {}
    for i in range(n):
        name = f"{i:012d}"
        save_jpg(root / "images" / d / f"{name}.jpg", rgb(h, w, rng))
        lab = label_with(vals, h, w, rng)
        save_png(root / "annotations" / d / f"{name}.png", lab)
        exp[name] = np.vectorize(coco164_map)(lab)
    return exp


def make_coco10k(root: Path, n=3, h=17, w=16, seed=0):
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    vals = [0] + [v + 1 for v in range(182) if v not in COCO_UNUSED]
    exp = {"train": {}, "test": {}}
    for split in ("train", "test"):
        ids = []
        for i in range(n):
            name = f"COCO_{split}2014_{i:012d}"
            ids.append(name)
            save_jpg(root / "images" / f"{name}.jpg", rgb(h, w, rng))
            lab = label_with(vals, h, w, rng)
            (root / "annotations").mkdir(parents=True, exist_ok=True)
            savemat(root / "annotations" / f"{name}.mat", {"S": lab.astype(np.uint16), "names": np.array(["x"])})
            exp[split][name] = np.vectorize(coco10_map)(lab)
        (root / "imageLists").mkdir(parents=True, exist_ok=True)
        (root / "imageLists" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return exp


def make_camvid(root: Path, split="train", n=2, h=10, w=13, seed=0, with_list=True):
    rng = np.random.default_rng(seed)
    exp = {}
    lines = []
    for i in range(n):
        name = f"0001TP_{i:06d}"
        Image.fromarray(rgb(h, w, rng)).save(_mk(root / split / f"{name}.png"))
        lab = label_with(range(12), h, w, rng)
        save_png(root / f"{split}annot" / f"{name}.png", lab)
        exp[name] = np.vectorize(camvid_map)(lab)
        lines.append(f"{split}/{name}.png {split}annot/{name}.png")
    if with_list:
        (root / f"camvid_{split}_list.txt").write_text("\n".join(lines) + "\n")
    return exp


def _mk(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def read_shard_labels(manifest_path) -> dict:
    """{raw key: (label array, image bytes, image ext)} from the shards of a manifest."""
    import json
    import tarfile

    from lakd.data.manifest import load_manifest

    m = load_manifest(manifest_path)
    out = {}
    for url in m.shard_urls():
        with tarfile.open(url) as tf:
            members = {}
            for mem in tf:
                key, _, field = mem.name.partition(".")
                members.setdefault(key, {})[field] = tf.extractfile(mem).read()
        for key, f in members.items():
            meta = json.loads(f["json"])
            ext = meta["image_format"]
            lab = Image.open(io.BytesIO(f["label.png"]))
            assert lab.mode == "L"
            out[meta["key"]] = (np.asarray(lab), f[ext], ext)
    return out
