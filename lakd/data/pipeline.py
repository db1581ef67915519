"""The streaming loaders over WebDataset shards, under their historical import path.

The pieces live in one module per concept:
- `lakd.data.shards`: which shard locations may be opened, opening one, reading a range of its samples;
- `lakd.data.ordering`: which samples each rank and worker reads, in which order, and how far it got;
- `lakd.data.samples`: a sample's members and the check of its label values;
- `lakd.data.corrupt`: corrupt data skipped, counted and warned about at a bounded rate;
- `lakd.data.workers`: DataLoader worker processes and stop signals;
- `lakd.data.train_stream`: the infinite, exactly resumable training stream (`build_train_loader`);
- `lakd.data.eval_loader`: the whole-image evaluation loader (`build_eval_loader`).
"""
from __future__ import annotations

from lakd.data.eval_loader import EvalLoader, build_eval_loader
from lakd.data.samples import check_label_values
from lakd.data.train_stream import TrainStream, build_train_loader

__all__ = ["EvalLoader", "build_eval_loader", "TrainStream", "build_train_loader", "check_label_values"]
