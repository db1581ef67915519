"""Every reader on a tiny fake raw tree in its real layout: the stored train ids are checked pixel by pixel
against the published encodings; images are stored byte for byte."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lakd.data import build_shards, get_card, list_cards
from tests.data import fakeraw


def _check(manifest, expected: dict, root: Path, image_paths: dict | None = None):
    got = fakeraw.read_shard_labels(manifest)
    assert sorted(got) == sorted(expected)
    for key, exp in expected.items():
        lab, img_bytes, ext = got[key]
        assert lab.dtype == np.uint8 and lab.shape == exp.shape
        np.testing.assert_array_equal(lab, exp.astype(np.uint8), err_msg=key)
        if image_paths:
            assert img_bytes == Path(image_paths[key]).read_bytes(), "image bytes must pass through unchanged"


def test_cards_are_consistent():
    assert set(list_cards()) == {"cityscapes", "ade20k", "voc", "coco_stuff164k", "coco_stuff10k", "camvid", "synthetic"}
    for name in list_cards():
        c = get_card(name)
        assert len(c.class_names) == c.num_classes == len(c.palette)
        assert c.ignore_index == 255
        trains = set(c.raw_to_train.values()) - {255}
        assert trains == set(range(c.num_classes)), name
    assert get_card("cityscapes").num_classes == 19
    assert get_card("ade20k").num_classes == 150
    assert get_card("voc").num_classes == 21
    assert get_card("coco_stuff164k").num_classes == get_card("coco_stuff10k").num_classes == 171
    assert get_card("coco_stuff164k").class_names == get_card("coco_stuff10k").class_names
    assert get_card("camvid").num_classes == 11
    with pytest.raises(ValueError, match="unknown dataset"):
        get_card("imagenet")


def test_cityscapes(tmp_path):
    exp = fakeraw.make_cityscapes(tmp_path / "raw", "val", n=3)
    m = build_shards("cityscapes", "val", tmp_path / "out", tmp_path / "raw", samples_per_shard=2, workers=1,
                     progress=False)
    paths = {k: next((tmp_path / "raw").glob(f"leftImg8bit/val/*/{k}_leftImg8bit.png")) for k in exp}
    _check(m, exp, tmp_path, paths)


def test_ade20k(tmp_path):
    exp = fakeraw.make_ade20k(tmp_path / "raw", "train")
    m = build_shards("ade20k", "train", tmp_path / "out", tmp_path / "raw", workers=1, progress=False)
    paths = {k: tmp_path / "raw/ADEChallengeData2016/images/training" / f"{k}.jpg" for k in exp}
    _check(m, exp, tmp_path, paths)


def test_voc_train_aug_grey_and_val_palette(tmp_path):
    exp = fakeraw.make_voc(tmp_path / "raw")
    base = tmp_path / "raw/VOCdevkit/VOC2012"
    for split in ("train_aug", "val"):
        m = build_shards("voc", split, tmp_path / "out", tmp_path / "raw", workers=1, progress=False)
        _check(m, exp[split], tmp_path, {k: base / "JPEGImages" / f"{k}.jpg" for k in exp[split]})
    # "train" is the train_aug list
    m = build_shards("voc", "train", tmp_path / "out", base, workers=1, progress=False)
    _check(m, exp["train_aug"], tmp_path)


def test_coco_stuff164k(tmp_path):
    exp = fakeraw.make_coco164k(tmp_path / "raw", "val")
    m = build_shards("coco_stuff164k", "val", tmp_path / "out", tmp_path / "raw", workers=1, progress=False)
    _check(m, exp, tmp_path, {k: tmp_path / "raw/images/val2017" / f"{k}.jpg" for k in exp})
    got = fakeraw.read_shard_labels(m)
    ids = set(np.unique(np.concatenate([v[0].ravel() for v in got.values()])).tolist())
    assert ids == set(range(171)) | {255}


def test_coco_stuff10k_mat(tmp_path):
    exp = fakeraw.make_coco10k(tmp_path / "raw")
    for split in ("train", "test"):
        m = build_shards("coco_stuff10k", split, tmp_path / "out", tmp_path / "raw", workers=1, progress=False)
        _check(m, exp[split], tmp_path, {k: tmp_path / "raw/images" / f"{k}.jpg" for k in exp[split]})


def test_camvid_list_and_folders(tmp_path):
    exp = fakeraw.make_camvid(tmp_path / "raw", "train")
    m = build_shards("camvid", "train", tmp_path / "out", tmp_path / "raw", workers=1, progress=False)
    _check(m, exp, tmp_path, {k: tmp_path / "raw/train" / f"{k}.png" for k in exp})
    exp = fakeraw.make_camvid(tmp_path / "raw2", "test", with_list=False)
    m = build_shards("camvid", "test", tmp_path / "out", tmp_path / "raw2", workers=1, progress=False)
    _check(m, exp, tmp_path)


def test_non_passthrough_image_is_reencoded(tmp_path):
    from PIL import Image

    raw = tmp_path / "raw"
    exp = fakeraw.make_camvid(raw, "val", with_list=False)
    key = sorted(exp)[0]
    arr = np.asarray(Image.open(raw / "val" / f"{key}.png").convert("RGB"))
    (raw / "val" / f"{key}.png").unlink()
    Image.fromarray(arr).save(raw / "val" / f"{key}.png", format="BMP")  # BMP bytes under a .png name
    m = build_shards("camvid", "val", tmp_path / "out", raw, workers=1, progress=False)
    lab, img, ext = fakeraw.read_shard_labels(m)[key]
    assert ext == "png"
    np.testing.assert_array_equal(np.asarray(Image.open(__import__("io").BytesIO(img))), arr)


@pytest.mark.parametrize("problem", ["missing_label", "size", "bad_image", "bad_id", "rgb_label"])
def test_bad_input_names_the_sample_or_is_skipped(tmp_path, problem):
    from PIL import Image

    raw = tmp_path / "raw"
    exp = fakeraw.make_cityscapes(raw, "train", n=3)
    bad = sorted(exp)[1]
    city = bad.split("_")[0]
    lab_path = raw / "gtFine/train" / city / f"{bad}_gtFine_labelIds.png"
    img_path = raw / "leftImg8bit/train" / city / f"{bad}_leftImg8bit.png"
    if problem == "missing_label":
        lab_path.unlink()
        msg = "missing"
    elif problem == "size":
        fakeraw.save_png(lab_path, np.zeros((5, 5)))
        msg = "size"
    elif problem == "bad_image":
        img_path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
        msg = "unreadable image"
    elif problem == "bad_id":
        fakeraw.save_png(lab_path, np.full((12, 16), 40))
        msg = "outside the cityscapes mapping: 40"
    else:
        Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(lab_path)
        msg = "mode RGB"
    with pytest.raises(ValueError, match=msg) as ei:
        build_shards("cityscapes", "train", tmp_path / "out", raw, workers=1, progress=False)
    assert bad in str(ei.value)
    assert not list((tmp_path / "out").glob("*.manifest.json"))
    assert not list((tmp_path / "out").glob("*.tmp-*"))
    m = build_shards("cityscapes", "train", tmp_path / "out", raw, workers=2, skip_bad=True, progress=False)
    from lakd.data import load_manifest

    man = load_manifest(m)
    assert man.skipped == 1 and man.skipped_keys == [bad] and man.total == 2
    exp.pop(bad)
    _check(m, exp, tmp_path)


def test_missing_root_and_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        build_shards("ade20k", "train", tmp_path / "out", tmp_path / "nothing", progress=False)
    with pytest.raises(ValueError, match="unknown split"):
        build_shards("ade20k", "bogus", tmp_path / "out", tmp_path, progress=False)
    with pytest.raises(ValueError, match="root"):
        build_shards("ade20k", "train", tmp_path / "out", None, progress=False)
