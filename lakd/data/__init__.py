"""Datasets -> WebDataset shards -> streaming loaders (see ARCHITECTURE.md, section lakd.data).

Heavy submodules (torch) are imported lazily, so `lakd shards ...` and the readers stay light.
"""
from __future__ import annotations

from lakd.data.cards import DatasetCard, get_card, list_cards
from lakd.data.manifest import Manifest, load_manifest

__all__ = ["DatasetCard", "get_card", "list_cards", "Manifest", "load_manifest", "build_shards",
           "build_train_loader", "build_eval_loader", "TrainStream", "EvalLoader"]


def __getattr__(name):
    if name == "build_shards":
        from lakd.data.build import build_shards

        return build_shards
    if name in ("build_train_loader", "TrainStream"):
        from lakd.data import train_stream

        return getattr(train_stream, name)
    if name in ("build_eval_loader", "EvalLoader"):
        from lakd.data import eval_loader

        return getattr(eval_loader, name)
    raise AttributeError(f"module 'lakd.data' has no attribute {name!r}")
