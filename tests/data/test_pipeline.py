"""Streaming loaders: batches, augmentation, exact resume, rank/worker split, corruption handling."""
from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from lakd.data import build_eval_loader, build_shards, build_train_loader, load_manifest
from lakd.data import train_stream
from lakd.data.ordering import plan_span
from lakd.data.transforms import IMAGENET_MEAN, IMAGENET_STD, decode_label, sample_rng, scale_choices, train_transform
from tests.data.shardedit import rewrite_shard


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    return build_shards("synthetic", "train", out, num_samples=45, image_size=40, seed=0, samples_per_shard=8,
                        workers=1, progress=False)


def _take(stream, n):
    return [next(stream) for _ in range(n)]


def _same(a, b):
    return all(torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"]) for x, y in zip(a, b))


def test_train_batches(shards):
    s = build_train_loader(shards, batch_size=3, crop_size=(24, 32), seed=0)
    b = next(s)
    assert set(b) == {"image", "label"}
    assert b["image"].shape == (3, 3, 24, 32) and b["image"].dtype == torch.float32
    assert b["label"].shape == (3, 24, 32) and b["label"].dtype == torch.int64
    assert set(b["label"].unique().tolist()) <= set(range(8)) | {255}
    assert s.stats["steps"] == 1 and s.stats["samples"] == 3 and s.stats["corrupt"] == 0
    assert s.steps_per_epoch == 45 // 3
    # big crops force padding: label 255 and image exactly 0 there
    s = build_train_loader(shards, batch_size=4, crop_size=100, seed=0, scale_range=(0.5, 0.5))
    b = next(s)
    pad = b["label"] == 255
    assert pad.float().mean() > 0.5
    assert torch.all(b["image"].permute(1, 0, 2, 3)[:, pad] == 0)


def test_scale_choices():
    np.testing.assert_allclose(scale_choices((0.5, 2.0)), np.arange(16) / 10 + 0.5)


def _reference_augment(image, label, rng, crop, scales, mean, std):
    """The reference code's way: resize the whole image, pad, crop, flip (float math, then compare)."""
    ch, cw = crop
    w, h = image.size
    f = float(scales[int(rng.integers(len(scales)))])
    sw, sh = max(1, int(round(w * f))), max(1, int(round(h * f)))
    ph, pw = max(sh, ch), max(sw, cw)
    y0 = int(rng.integers(ph - ch + 1))
    x0 = int(rng.integers(pw - cw + 1))
    flip = bool(rng.integers(2))
    img = np.asarray(image.resize((sw, sh), Image.BILINEAR), np.float32)
    lab = np.asarray(label.resize((sw, sh), Image.NEAREST), np.int64)
    img = (img - np.array(mean, np.float32)) / np.array(std, np.float32)
    ip = np.zeros((ph, pw, 3), np.float32)
    lp = np.full((ph, pw), 255, np.int64)
    ip[:sh, :sw], lp[:sh, :sw] = img, lab
    ip, lp = ip[y0:y0 + ch, x0:x0 + cw], lp[y0:y0 + ch, x0:x0 + cw]
    if flip:
        ip, lp = ip[:, ::-1], lp[:, ::-1]
    return ip.transpose(2, 0, 1), lp


def test_crop_then_resize_matches_resize_then_crop():
    from lakd.data.readers.synthetic import generate
    from lakd.data.transforms import norm_tensors

    img, lab = generate(3, 61, 0)
    image, label = Image.fromarray(img), Image.fromarray(lab)
    mean_t, std_t = norm_tensors(IMAGENET_MEAN, IMAGENET_STD)
    scales = scale_choices((0.5, 2.0))
    for i in range(40):
        crop = [(32, 32), (48, 40), (80, 70)][i % 3]
        x, y = train_transform(image, label, sample_rng(0, 0, i), crop_size=crop, scales=scales, mean_t=mean_t,
                               std_t=std_t)
        rx, ry = _reference_augment(image, label, sample_rng(0, 0, i), crop, scales, IMAGENET_MEAN, IMAGENET_STD)
        np.testing.assert_array_equal(y.numpy(), ry)
        # same pixels up to the 8-bit rounding of PIL's resampling at window borders
        assert np.abs(x.numpy() - rx).max() <= 1.01 / min(IMAGENET_STD)


def test_palette_label_keeps_indices():
    im = Image.fromarray(np.array([[0, 5], [20, 255]], np.uint8), mode="L").convert("P")
    im.putpalette([(i * 7) % 256 for i in range(768)])
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    np.testing.assert_array_equal(np.asarray(decode_label(buf.getvalue())), [[0, 5], [20, 255]])


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("world_size", [1, 2])
def test_exact_resume(shards, num_workers, world_size):
    n = 14  # crosses an epoch boundary (45 samples / (world x workers) per run, batch 3)
    for rank in range(world_size):
        kw = dict(batch_size=3, crop_size=24, seed=7, rank=rank, world_size=world_size, num_workers=num_workers,
                  shuffle_buffer=6)
        s = build_train_loader(shards, **kw)
        ref = _take(s, n)
        s.close()
        for k in (5, 9) if num_workers else (1, 5, 9):
            s = build_train_loader(shards, **kw)
            _take(s, k)
            sd = s.state_dict()
            s.close()
            r = build_train_loader(shards, **kw)
            r.load_state_dict(sd)
            got = _take(r, n - k)
            r.close()
            assert _same(ref[k:], got), (rank, k)
            assert r.stats["steps"] == n and r.stats["samples"] == 3 * n


def test_loader_state_says_how_far_each_worker_got(shards):
    """The positions live in the loader, not in the batches, in the format checkpoints hold (version 1)."""
    s = build_train_loader(shards, batch_size=3, crop_size=16, seed=7, num_workers=2, shuffle_buffer=4)
    batches = _take(s, 5)
    assert all(set(b) == {"image", "label"} for b in batches)
    counts = {"samples": 9, "corrupt": 0, "truncated_shards": 0}
    assert s.state_dict() == {
        "version": 1, "step": 5, "rank": 0, "world_size": 1, "num_workers": 2, "batch_size": 3, "seed": 7,
        "total": 45, "shards": 6,
        "workers": [{"epoch": 0, "pos": 9, "stats": counts}, {"epoch": 0, "pos": 6, "stats": {**counts, "samples": 6}}]}
    s.close()


def test_worker_start_leaves_torch_random_state_alone(shards):
    """Starting worker processes draws their seed from the loader's own generator, not from torch's global one
    that training draws from; so (re)starts do not shift the training's random stream."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    s = build_train_loader(shards, batch_size=3, crop_size=16, seed=7, num_workers=2, shuffle_buffer=4)
    _take(s, 2)
    s.load_state_dict(s.state_dict())  # restarts the workers
    _take(s, 2)
    s.close()
    assert torch.equal(torch.get_rng_state(), before)


def test_resume_skips_without_decoding(shards, monkeypatch):
    calls = {"n": 0}
    real = train_stream.decode_image

    def counting(data, *cap):
        calls["n"] += 1
        return real(data, *cap)

    monkeypatch.setattr(train_stream, "decode_image", counting)
    kw = dict(batch_size=4, crop_size=16, seed=1, shuffle_buffer=8)
    s = build_train_loader(shards, **kw)
    _take(s, 8)
    sd = s.state_dict()
    calls["n"] = 0
    r = build_train_loader(shards, **kw)
    r.load_state_dict(sd)
    next(r)
    assert calls["n"] == 4


def test_runs_are_equal_and_disjoint_and_reshuffled(shards):
    m = load_manifest(shards)
    ws, W = 2, 3
    offsets = m.offsets()
    per_epoch = []
    for epoch in range(2):
        seen = []
        for slot in range(ws * W):
            segs, perm = plan_span(m.samples_per_shard, seed=0, epoch=epoch, slot=slot, slots=ws * W,
                                   shuffle_buffer=4)
            idx = [offsets[s.shard] + p for s in segs for p in range(s.start, s.stop)]
            assert len(idx) == 45 // 6 and sorted(perm.tolist()) == list(range(len(idx)))
            seen += idx
        assert len(set(seen)) == len(seen) == 42
        per_epoch.append(seen)
    assert per_epoch[0] != per_epoch[1]


def test_fewer_shards_than_ranks_times_workers(tmp_path):
    m = build_shards("synthetic", "train", tmp_path, num_samples=10, image_size=16, samples_per_shard=100,
                     workers=1, progress=False)
    assert len(load_manifest(m).shards) == 1
    for rank in range(2):
        s = build_train_loader(m, batch_size=2, crop_size=8, seed=0, rank=rank, world_size=2, num_workers=2)
        _take(s, 3)
        s.close()
    with pytest.raises(ValueError, match="cannot feed"):
        build_train_loader(m, batch_size=2, crop_size=8, seed=0, world_size=4, num_workers=3)


def test_pipe_urls_and_shard_root(shards):
    local = build_train_loader(shards, batch_size=2, crop_size=16, seed=3)
    m = load_manifest(shards, shard_root=f"pipe:cat {shards.parent}/{{shard}}")
    assert m.shard_urls()[0].startswith("pipe:cat ")
    piped = build_train_loader(m, batch_size=2, crop_size=16, seed=3)
    assert _same(_take(local, 30), _take(piped, 30))
    # resume over a pipe (no seeking: members are read and dropped, still not decoded)
    sd = piped.state_dict()
    ref = _take(piped, 3)
    r = build_train_loader(m, batch_size=2, crop_size=16, seed=3)
    r.load_state_dict(sd)
    assert _same(ref, _take(r, 3))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_data_is_skipped_counted_and_warned(tmp_path, caplog, num_workers):
    m = build_shards("synthetic", "train", tmp_path, num_samples=40, image_size=24, samples_per_shard=10,
                     workers=1, progress=False)
    man = load_manifest(m)
    small = io.BytesIO()
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(small, format="PNG")
    rewrite_shard(tmp_path / man.shards[0], lambda n, d: b"\xff\xd8garbage" if n == "00000003.jpg" else d)
    rewrite_shard(tmp_path / man.shards[1], lambda n, d: small.getvalue() if n == "00000012.label.png" else d)
    rewrite_shard(tmp_path / man.shards[1], lambda n, d: None if n == "00000015.jpg" else d)
    p = tmp_path / man.shards[2]
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # truncated: about half its samples are lost
    # evaluation skips them: 3 bad members + the lost part of the truncated shard
    e = build_eval_loader(m)
    keys = [it["key"][0] for it in e]
    bad = 40 - len(keys)
    assert e.stats["corrupt"] == bad and bad >= 3 + 4
    for k in ("synthetic_train_0000003", "synthetic_train_0000012", "synthetic_train_0000015"):
        assert k not in keys
    assert "synthetic_train_0000039" in keys
    # training: the stream goes on over several epochs, counting every bad sample each time it comes by
    caplog.set_level(logging.WARNING, logger="lakd.data")
    s = build_train_loader(m, batch_size=2, crop_size=16, seed=0, num_workers=num_workers, shuffle_buffer=4)
    _take(s, 50)
    st = s.stats
    s.close()
    assert st["samples"] == 100 and st["epoch"] >= 3
    assert st["corrupt"] >= bad * 3 - 3 and st["truncated_shards"] >= 3
    if num_workers == 0:  # worker processes warn through their own copies of the loader's warner
        assert "skipped corrupt data" in caplog.text
        assert s.warner.reported == st["corrupt"] + st["truncated_shards"] and s.warner.logged >= 5
    assert e.warner.reported == e.stats["corrupt"] + e.stats["truncated_shards"]


def test_each_loader_owns_its_warning_budget(tmp_path, caplog):
    m = build_shards("synthetic", "train", tmp_path, num_samples=12, image_size=16, samples_per_shard=6,
                     workers=1, progress=False)
    rewrite_shard(tmp_path / load_manifest(m).shards[0], lambda n, d: b"garbage" if n.endswith(".jpg") else d)
    caplog.set_level(logging.WARNING, logger="lakd.data")
    first = build_eval_loader(m)
    assert len(list(first)) == 6
    assert (first.warner.reported, first.warner.logged, first.warner.suppressed) == (6, 5, 1)
    caplog.clear()
    second = build_eval_loader(m)  # the first loader used up its budget, not this one's
    list(second)
    assert second.warner.logged == 5 and caplog.text.count("skipped corrupt data") == 5


def test_eval_loader_covers_each_image_once(shards):
    keys = []
    for ws in (1, 3):
        got = []
        for rank in range(ws):
            e = build_eval_loader(shards, rank=rank, world_size=ws, num_workers=2 if rank == 0 else 0)
            items = list(e)
            assert len(items) == len(e) and abs(len(e) - 45 / ws) < 1
            for it in items:
                assert it["image"].shape == (1, 3, 40, 40) and it["label"].shape == (1, 40, 40)
                assert it["image"].dtype == torch.float32 and it["label"].dtype == torch.int64
            got += [it["key"][0] for it in items]
        assert sorted(got) == [f"synthetic_train_{i:07d}" for i in range(45)]
        keys.append(got)
    e = build_eval_loader(shards)
    it = next(iter(e))
    from lakd.data.readers.synthetic import generate

    img, lab = generate(0, 40, 0, 0)
    np.testing.assert_array_equal(it["label"][0].numpy(), lab)


def test_state_from_other_rank_resumes_approximately(shards, caplog):
    s = build_train_loader(shards, batch_size=2, crop_size=16, seed=0, rank=0, world_size=2)
    _take(s, 4)
    sd = s.state_dict()
    caplog.set_level(logging.WARNING, logger="lakd.data")
    r = build_train_loader(shards, batch_size=2, crop_size=16, seed=0, rank=1, world_size=2)
    r.load_state_dict(sd)
    assert "different set-up" in caplog.text
    assert r.state_dict()["workers"][0]["pos"] == 8 and r.step == 4
    next(r)
    with pytest.raises(ValueError):
        r.load_state_dict({"version": 99})


def test_all_corrupt_raises_instead_of_hanging(tmp_path):
    m = build_shards("synthetic", "train", tmp_path, num_samples=6, image_size=16, samples_per_shard=3, workers=1,
                     progress=False)
    for p in tmp_path.glob("*.tar"):
        p.write_bytes(b"\0" * 100)
    s = build_train_loader(m, batch_size=2, crop_size=8, seed=0)
    with pytest.raises(RuntimeError, match="no readable sample"):
        next(s)


def test_manifest_from_pipe_and_glob(shards):
    m = load_manifest(f"pipe:cat {shards}")
    assert m.shard_urls()[0] == f"pipe:cat {shards.parent}/synthetic-train-000000.tar"
    a = build_train_loader(m, batch_size=2, crop_size=16, seed=0)
    b = build_train_loader(str(shards.parent / "*.manifest.json"), batch_size=2, crop_size=16, seed=0)
    assert _same(_take(a, 3), _take(b, 3))
    with pytest.raises(ValueError, match="command failed"):
        load_manifest("pipe:false")
    with pytest.raises(ValueError, match="not found"):
        load_manifest(shards.parent / "nope.manifest.json")


def test_pixel_cap_travels_to_spawned_workers(shards):
    """The cap is the loader's argument, carried by the dataset its workers run: it holds in workers started
    with spawn (nothing inherited from the parent's module state), for both loaders. 40x40 images, cap 1000."""
    from lakd.data.train_stream import TrainStream
    from lakd.data.workers import worker_iter

    e = build_eval_loader(shards, num_workers=1, max_pixels=1000)
    items = list(worker_iter(e._dataset(), 1, seed=0, multiprocessing_context="spawn"))
    assert len(items) == len(e) and all(it.item is None for it in items) and items[-1].counts["corrupt"] == len(e)
    assert len(list(build_eval_loader(shards, max_pixels=1600))) == len(e)  # at the cap: kept

    s = TrainStream(load_manifest(shards), batch_size=2, crop_size=16, seed=0, num_workers=1, max_pixels=1000)
    it = worker_iter(s._dataset(), 1, seed=0, multiprocessing_context="spawn")
    try:
        with pytest.raises(RuntimeError, match="no readable sample"):
            next(it)
    finally:
        it._shutdown_workers()  # the worker waits for more work after raising
