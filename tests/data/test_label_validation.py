"""Label values are validated once per sample, on the host side of the loaders: a value that is neither a
class id nor the ignore index makes the sample corrupt (skipped, counted, named in the warning) instead of
crashing the training step."""
from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from lakd.data import build_eval_loader, build_shards, build_train_loader, load_manifest
from lakd.data import train_stream
from lakd.data.samples import check_label_values
from lakd.data.transforms import CorruptSample
from tests.data.shardedit import rewrite_shard

BAD_KEY = "00000005"


def _with_value(data: bytes, value: int) -> bytes:
    arr = np.array(Image.open(io.BytesIO(data)))
    arr[2:4, 2:5] = value
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bad_label_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("badlabel")
    m = build_shards("synthetic", "train", out, num_samples=16, image_size=24, samples_per_shard=8, workers=1,
                     progress=False)
    shard = out / load_manifest(m).shards[0]
    rewrite_shard(shard, lambda n, d: _with_value(d, 200) if n == f"{BAD_KEY}.label.png" else d)  # 8 classes: 200 is bad
    return m, shard


def test_check_label_values_names_the_values():
    im = Image.fromarray(np.array([[0, 7, 255], [200, 8, 8]], np.uint8))
    with pytest.raises(CorruptSample, match=r"label value\(s\) 8, 200 \(3 pixels\).*\[0, 8\).*255"):
        check_label_values(im, 8, 255)
    check_label_values(im, 201, 255)  # all valid
    check_label_values(Image.fromarray(np.full((2, 2), 255, np.uint8)), 1, 255)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_label_value_is_skipped_counted_and_named(bad_label_shards, caplog, num_workers):
    m, shard = bad_label_shards
    caplog.set_level(logging.WARNING, logger="lakd.data")
    s = build_train_loader(m, batch_size=3, crop_size=16, seed=0, num_workers=num_workers, shuffle_buffer=4)
    batches = [next(s) for _ in range(15)]  # 45 good samples: about three epochs of 15 good ones
    st = s.stats
    s.close()
    assert st["samples"] == 45 and st["epoch"] >= 2
    assert 2 <= st["corrupt"] <= st["epoch"] + 1  # the bad sample once in every epoch that reached it
    assert all(int(b["label"].max()) < 8 or int(b["label"].max()) == 255 for b in batches)
    assert all(set(b["label"].unique().tolist()) <= set(range(8)) | {255} for b in batches)
    if num_workers == 0:  # worker processes log in their own process
        assert f"{shard}:{BAD_KEY}: label value(s) 200 (6 pixels)" in caplog.text


def test_eval_loader_skips_bad_label_values(bad_label_shards):
    m, _ = bad_label_shards
    e = build_eval_loader(m)
    keys = [it["key"][0] for it in e]
    assert len(keys) == 15 and e.stats["corrupt"] == 1
    assert "synthetic_train_0000005" not in keys


def test_model_class_count_wins_over_the_manifest(bad_label_shards):
    m, _ = bad_label_shards
    one = build_train_loader(m, batch_size=2, crop_size=16, seed=0, num_classes=1)  # only "background" is valid
    try:
        labels = [next(one)["label"] for _ in range(2)]
    except RuntimeError as exc:  # no sample of the split is all background
        assert "no readable sample" in str(exc)
    else:  # the samples that are all background pass, every other one is skipped and counted
        assert all(int(((lab != 255) & (lab != 0)).sum()) == 0 for lab in labels)
        assert one.stats["corrupt"] > 0
    s = build_train_loader(m, batch_size=2, crop_size=16, seed=0, num_classes=201)  # now 200 is a class id
    for _ in range(8):
        next(s)
    assert s.stats["corrupt"] == 0


def test_labels_are_validated_once_per_sample(bad_label_shards, monkeypatch):
    m, _ = bad_label_shards
    calls = []
    monkeypatch.setattr(train_stream, "check_label_values", lambda *a: (calls.append(1), check_label_values(*a))[1])
    s = build_train_loader(m, batch_size=4, crop_size=16, seed=0, num_classes=201)
    for _ in range(3):
        next(s)
    assert len(calls) == 3 * 4  # once per sample of each batch, in the loader; the step checks nothing
