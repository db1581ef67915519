"""Corrupt data reaches the user: what the loaders skipped is in metrics.jsonl (step and eval records), in
result.json ("data") and in the final line of `lakd train`."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lakd.cli import main
from lakd.data import load_manifest
from lakd.engine.trainer import describe_skipped
from lakd.rundir import StageDir
from tests.data.shardedit import rewrite_shard

from .helpers import LAUNCHER_VARS, tiny_args


def _out_of_range(data: bytes) -> bytes:
    arr = np.array(Image.open(io.BytesIO(data)))
    arr[:3, :3] = 200  # 8 classes, ignore 255: neither
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _plant(shards, tmp_path, split: str, key: str):
    """A copy of the shards with one label of `split` out of range; returns the copy."""
    out = tmp_path / "shards"
    if not out.exists():
        shutil.copytree(shards, out)
    shard = out / load_manifest(out / f"synthetic-{split}.manifest.json").shards[0]
    rewrite_shard(shard, lambda n, d: _out_of_range(d) if n == f"{key}.label.png" else d)
    return out


def test_corrupt_labels_are_counted_in_metrics_result_and_final_line(shards, tmp_path, monkeypatch, capsys):
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)
    bad = _plant(shards, tmp_path, "train", "00000003")
    _plant(shards, tmp_path, "val", "00000001")
    # 12 steps of 4 read the 48 training samples about once: the bad one once (twice if it opens epoch 2)
    args = tiny_args(bad, tmp_path / "runs", "c", **{"train.iters": 12, "eval.every": 6, "checkpoint.every": 6,
                                                     "log.every": 1})
    assert main(["train", "--stage", "baseline", "--config", "synthetic", *args]) == 0
    err = capsys.readouterr().err
    sd = StageDir.at(tmp_path / "runs", "c", "baseline")
    result = sd.read_result()
    assert result["data"]["eval"] == {"corrupt": 1, "truncated_shards": 0}  # 8 val images, one bad label
    train = result["data"]["train"]
    assert 1 <= train["corrupt"] <= 2 and train["truncated_shards"] == 0
    records = list(sd.metrics_records())
    steps = [r for r in records if "loss" in r]
    assert [r["data"]["corrupt"] for r in steps] == sorted(r["data"]["corrupt"] for r in steps)  # a running count
    assert steps[-1]["data"] == result["data"]["train"]
    assert all(r["data"] == {"corrupt": 1, "truncated_shards": 0} for r in records if "eval" in r)
    final = [line for line in err.splitlines() if "finished at step 12" in line][-1]
    assert f"skipped {train['corrupt']} corrupt training sample(s), 1 corrupt evaluation image(s)" in final
    assert f"lakd shards verify {bad / 'synthetic-train.manifest.json'}" in final


def test_nothing_skipped_says_nothing():
    assert describe_skipped({"corrupt": 0, "truncated_shards": 0}, {"corrupt": 0}) == ""
    assert describe_skipped({"corrupt": 2}, {"truncated_shards": 1}, ["m.json"]) == (
        "; skipped 2 corrupt training sample(s), 1 unreadable evaluation shard read(s) (named in the warnings; "
        "lakd shards verify m.json)")
