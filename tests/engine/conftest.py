"""Fixtures of the engine tests: tiny synthetic shards shared by the whole session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    """Synthetic train (48 images) and val (8 images) shards, 64 x 64 pixels."""
    from lakd.data import build_shards

    out = tmp_path_factory.mktemp("shards")
    build_shards("synthetic", "train", out, samples_per_shard=8, workers=1, progress=False,
                 num_samples=48, image_size=64, seed=0)
    build_shards("synthetic", "val", out, samples_per_shard=4, workers=1, progress=False,
                 num_samples=8, image_size=64, seed=0)
    return out
