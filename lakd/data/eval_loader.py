"""The evaluation loader: whole images of a split, each exactly once over all ranks, in manifest order."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lakd.data.corrupt import COUNTERS, CorruptWarner, new_counts
from lakd.data.manifest import Manifest, load_manifest
from lakd.data.ordering import balanced_bounds, spans
from lakd.data.samples import check_label_values, describe, sample_fields
from lakd.data.shards import read_segments, shard_offsets
from lakd.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, MAX_PIXELS, CorruptSample, decode_image,
                                  decode_label, eval_transform, norm_tensors)
from lakd.data.workers import worker_iter


class EvalItem(NamedTuple):
    """What a worker hands the main process per sample: the image (None when the sample was corrupt), which
    worker read it and that worker's counts so far."""

    item: dict | None
    worker: int
    counts: dict


class EvalShards(IterableDataset):
    """What the workers run: worker `w` of `num_workers` reads its contiguous part of samples [a, b)."""

    def __init__(self, urls, counts, a, b, num_workers, mean, std, num_classes, ignore_index, warn: CorruptWarner,
                 max_pixels: int = MAX_PIXELS):
        super().__init__()
        self.max_pixels = int(max_pixels)
        self.urls, self.counts, self.a, self.b, self.W = urls, counts, a, b, num_workers
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.offsets = shard_offsets(counts)
        self.mean, self.std, self.warn = mean, std, warn

    def _decode(self, sample: dict, mean_t, std_t) -> dict:
        img_b, lab_b, meta = sample_fields(sample)
        label = decode_label(lab_b, self.max_pixels)
        check_label_values(label, self.num_classes, self.ignore_index)
        x, y = eval_transform(decode_image(img_b, self.max_pixels), label, mean_t=mean_t, std_t=std_t)
        return {"image": x.unsqueeze(0), "label": y.unsqueeze(0), "key": [str(meta.get("key", sample["__key__"]))]}

    def __iter__(self):
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
        w = info.id if info is not None else 0
        lo, hi = balanced_bounds(self.b - self.a, self.W, w)
        segs = spans(self.counts, np.arange(len(self.urls)), [(self.a + lo, self.a + hi)])[0]
        counts = new_counts()
        mean_t, std_t = norm_tensors(self.mean, self.std)
        for vp, sample in read_segments(self.urls, self.offsets, segs, None, counts, self.warn):
            item = None
            if sample is None:
                counts["corrupt"] += 1
                self.warn(f"evaluation sample {self.a + lo + vp} is missing")
            else:
                try:
                    item = self._decode(sample, mean_t, std_t)
                    counts["samples"] += 1
                except CorruptSample as exc:
                    counts["corrupt"] += 1
                    self.warn(f"{describe(sample)}: {exc}")
            yield EvalItem(item, w, dict(counts))


class EvalLoader:
    """Whole images of this rank's part of the split, one at a time:
    {"image": FloatTensor[1,3,H,W], "label": LongTensor[1,H,W], "key": [str]}.

    Ranks get disjoint, contiguous parts whose sizes differ by at most one image; together they cover the
    split exactly once. Corrupt samples are skipped and counted in `stats["corrupt"]`.
    """

    def __init__(self, manifest: Manifest, *, rank: int = 0, world_size: int = 1, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, num_workers: int = 0, num_classes: int | None = None, max_pixels: int = MAX_PIXELS):
        if not (0 <= rank < world_size):
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.manifest = manifest
        self.num_classes = int(manifest.num_classes if num_classes is None else num_classes)
        self.rank, self.world_size, self.num_workers = rank, world_size, int(num_workers)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.urls = manifest.shard_urls()
        self.counts = [int(c) for c in manifest.samples_per_shard]
        self.a, self.b = balanced_bounds(manifest.total, world_size, rank)
        self.max_pixels = int(max_pixels)  # decoded-size cap, handed to the workers with the dataset
        self.warner = CorruptWarner()  # this loader's; worker processes warn through their copies
        self._worker_counts: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.b - self.a

    @property
    def stats(self) -> dict:
        """Counts of the last pass, summed over workers (`lakd.data.corrupt.COUNTERS`)."""
        return {c: sum(s[c] for s in self._worker_counts.values()) for c in COUNTERS}

    def _dataset(self) -> EvalShards:
        return EvalShards(self.urls, self.counts, self.a, self.b, max(1, min(self.num_workers, len(self))),
                          self.mean, self.std, self.num_classes, int(self.manifest.ignore_index), self.warner,
                          max_pixels=self.max_pixels)

    def __iter__(self):
        ds = self._dataset()
        self._worker_counts = {}
        it = iter(ds) if self.num_workers == 0 else worker_iter(ds, ds.W, seed=0)
        for item, worker, counts in it:
            self._worker_counts[worker] = counts
            if item is not None:
                yield item


def build_eval_loader(manifest, *, rank: int = 0, world_size: int = 1, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      num_workers: int = 0, num_classes: int | None = None, allow_pipe: bool = False,
                      max_pixels: int = MAX_PIXELS) -> EvalLoader:
    """Evaluation loader of whole images over a shard manifest (a `Manifest` or a path to one); images and
    labels of more than ``max_pixels`` pixels are skipped and counted as corrupt."""
    manifest = load_manifest(manifest, allow_pipe=allow_pipe)
    return EvalLoader(manifest, rank=rank, world_size=world_size, mean=mean, std=std,
                      num_workers=num_workers, num_classes=num_classes, max_pixels=max_pixels)
