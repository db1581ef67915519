"""Shard builder: determinism, tar format, manifest, atomic writes, CLI."""
from __future__ import annotations

import hashlib
import json
import os
import tarfile

import numpy as np
import pytest

from lakd.data import build_shards, load_manifest
from lakd.data.readers.synthetic import generate


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def test_same_input_gives_byte_identical_shards(tmp_path):
    kw = dict(num_samples=23, image_size=32, seed=5, samples_per_shard=5, progress=False)
    m1 = build_shards("synthetic", "train", tmp_path / "a", workers=1, **kw)
    m2 = build_shards("synthetic", "train", tmp_path / "b", workers=2, **kw)
    d1, d2 = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert d1 == d2 and len(d1) == 5
    man = load_manifest(m1)
    assert man.sha256 == d1
    assert m1.read_bytes() == m2.read_bytes()
    m3 = build_shards("synthetic", "train", tmp_path / "c", workers=1, **{**kw, "seed": 6})
    assert _digest(tmp_path / "c") != d1


def test_shard_contents_and_manifest(tmp_path):
    m = build_shards("synthetic", "val", tmp_path, num_samples=7, image_size=24, seed=1, samples_per_shard=3,
                     workers=1, progress=False)
    assert m.name == "synthetic-val.manifest.json"
    man = load_manifest(m)
    assert man.shards == [f"synthetic-val-{i:06d}.tar" for i in range(3)]
    assert man.samples_per_shard == [3, 3, 1] and man.total == 7 and man.skipped == 0
    assert man.num_classes == 8 and man.lakd_version
    assert man.config["reader_options"] == {"image_size": 24, "num_samples": 7, "seed": 1}
    assert man.config["samples_per_shard"] == 3
    hist = np.zeros(8, np.int64)
    with tarfile.open(tmp_path / man.shards[0]) as tf:
        names = tf.getnames()
        assert names == ["00000000.jpg", "00000000.label.png", "00000000.json", "00000001.jpg",
                         "00000001.label.png", "00000001.json", "00000002.jpg", "00000002.label.png", "00000002.json"]
        for mem in tf.getmembers():
            assert (mem.mtime, mem.uid, mem.gid, mem.uname, mem.gname, mem.mode) == (0, 0, 0, "", "", 0o644)
        meta = json.loads(tf.extractfile("00000001.json").read())
        assert meta == {"key": "synthetic_val_0000001", "index": 1, "dataset": "synthetic", "split": "val",
                        "width": 24, "height": 24, "image_format": "jpg"}
    for i in range(7):
        _, lab = generate(i, 24, 1, 1)
        hist += np.bincount(lab.ravel(), minlength=8)
    assert man.class_pixel_histogram == hist.tolist()
    assert man.ignore_pixels == 0 and sum(man.class_pixel_histogram) == 7 * 24 * 24


def test_rebuild_removes_stale_shards(tmp_path):
    build_shards("synthetic", "train", tmp_path, num_samples=9, image_size=16, samples_per_shard=2, workers=1,
                 progress=False)
    assert len(list(tmp_path.glob("synthetic-train-*.tar"))) == 5
    build_shards("synthetic", "train", tmp_path, num_samples=9, image_size=16, samples_per_shard=4, workers=1,
                 progress=False)
    assert sorted(p.name for p in tmp_path.glob("synthetic-train-*.tar")) == load_manifest(
        tmp_path / "synthetic-train.manifest.json").shards


def test_crash_mid_build_leaves_nothing_complete_looking(tmp_path, monkeypatch):
    from lakd.data import build as build_mod
    from lakd.data.readers import synthetic

    real = synthetic.read_sample

    def flaky(ref):
        if ref.index == 6:
            raise KeyboardInterrupt  # e.g. the job is killed
        return real(ref)

    earlier = tmp_path / "earlier"
    build_mod.build_shards("synthetic", "train", earlier, num_samples=8, image_size=20, samples_per_shard=4,
                           workers=1, progress=False)
    kept = {p.name: p.read_bytes() for p in earlier.iterdir()}
    monkeypatch.setattr(synthetic, "read_sample", flaky)
    for out in (tmp_path / "new", earlier):
        with pytest.raises(KeyboardInterrupt):
            build_mod.build_shards("synthetic", "train", out, num_samples=10, image_size=16, samples_per_shard=4,
                                   workers=1, progress=False)
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == kept  # the earlier build, as it was
    tmp_path = tmp_path / "new"
    # shards get their names only once the whole split is written: the finished first shard, the half-written
    # second one and the manifest are all absent (an earlier build's shards would have stayed as they were)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_build_and_info(tmp_path, capsys):
    from lakd.cli import main

    rc = main(["shards", "build", "synthetic", "--split", "val", "--out", str(tmp_path), "--num-samples", "6",
               "--image-size", "20", "--seed", "3", "--samples-per-shard", "4", "--workers", "1", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "wrote 6 samples in 2 shards" in out
    assert main(["shards", "info", str(tmp_path / "synthetic-val.manifest.json")]) == 0
    out = capsys.readouterr().out
    assert "synthetic / val: 6 samples in 2 shards" in out and "background" in out
    assert main(["shards", "verify", str(tmp_path)]) == 0
    (tmp_path / "synthetic-val-000001.tar").write_bytes(b"x")
    assert main(["shards", "verify", str(tmp_path)]) == 1
    assert main(["shards", "build", "cityscapes", "--out", str(tmp_path)]) == 2
    assert "--root" in capsys.readouterr().err
    assert main(["shards", "build", "ade20k", "--root", str(tmp_path), "--seed", "1"]) == 2
    assert main(["shards", "info", str(tmp_path / "nope.json")]) == 2


def test_progress_lines_when_not_a_tty(tmp_path, capsys):
    build_shards("synthetic", "train", tmp_path, num_samples=3, image_size=16, workers=1)
    err = capsys.readouterr().err
    assert "[lakd shards] synthetic/train: 3/3 samples (100%)" in err


def test_shards_read_by_stock_webdataset(tmp_path):
    import io

    import webdataset as wds
    from PIL import Image

    from lakd.data.readers.synthetic import generate

    m = load_manifest(build_shards("synthetic", "val", tmp_path, num_samples=5, image_size=20, samples_per_shard=2,
                                   workers=1, progress=False))
    ds = wds.WebDataset(m.shard_urls(), shardshuffle=False, empty_check=False)
    samples = list(ds)
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(5)]
    for i, s in enumerate(samples):
        assert set(s) >= {"jpg", "label.png", "json"}
        lab = np.asarray(Image.open(io.BytesIO(s["label.png"])))
        np.testing.assert_array_equal(lab, generate(i, 20, 0, 1)[1])


def test_manifest_that_does_not_fit_leaves_the_earlier_build(tmp_path, monkeypatch):
    """The new shards take their names only after the manifest was written: a full disk at the manifest keeps
    the earlier build whole, and removes every shard of the failed one."""
    import errno

    from lakd.data import build as build_mod

    build_mod.build_shards("synthetic", "train", tmp_path, num_samples=8, image_size=20, samples_per_shard=4,
                           workers=1, progress=False)
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".manifest.json.tmp-" + str(os.getpid())):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as exc:
        build_mod.build_shards("synthetic", "train", tmp_path, num_samples=12, image_size=16, samples_per_shard=4,
                               workers=1, progress=False)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tmp_path / "synthetic-train.manifest.json")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept
