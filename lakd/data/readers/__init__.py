"""Raw dataset readers. Each module `lakd.data.readers.<dataset>` provides

- `SPLITS`: the split names it understands,
- `list_samples(root, split, **opts) -> list[ref]`: cheap, deterministic (sorted) list of picklable refs,
- `read_sample(ref) -> RawSample(key, image_bytes, image_ext, label_uint8_array)` (train ids, 255 = ignore),
  raising `BadSample` with a message naming the sample for bad input.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from lakd.data.cards import FOLDER, NAMES
from lakd.data.readers.base import BadSample, RawSample

__all__ = ["BadSample", "RawSample", "get_reader"]


def get_reader(dataset: str) -> ModuleType:
    if dataset not in NAMES and dataset != FOLDER:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(NAMES)}, {FOLDER}")
    return importlib.import_module(f"lakd.data.readers.{dataset}")
