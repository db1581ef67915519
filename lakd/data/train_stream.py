"""The training stream: infinite, exactly resumable batches of augmented crops over a shard manifest.

Which samples each rank and worker reads, and in which order, is `lakd.data.ordering`. Sample augmentation draws
from a generator seeded by (seed, epoch, global sample index); each worker batches its own samples, and the
DataLoader hands batches out round-robin over workers.

The loader's state (`TrainStream.state_dict`) is, per worker, its `WorkerPosition` plus the step count. A worker
hands each batch to the main process beside its position after it (`WorkerBatch`), never inside the batch; the
stream keeps the positions. Restoring the state re-creates the workers, rotates their roles so the round-robin
continues where it stopped, and each worker skips the consumed samples by reading only tar headers (local
files) -- nothing is decoded. Corrupt samples are skipped and counted (`lakd.data.corrupt`); they never stop
the stream.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lakd import IGNORE_INDEX
from lakd.data.corrupt import COUNTERS, CorruptWarner
from lakd.data.manifest import Manifest, load_manifest
from lakd.data.ordering import WorkerPosition, in_order, plan_span, positions_after, span_size
from lakd.data.samples import check_label_values, describe, sample_fields
from lakd.data.shards import read_segments, shard_offsets
from lakd.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, MAX_PIXELS, CorruptSample, decode_image,
                                  decode_label, norm_tensors, sample_rng, scale_choices, train_transform)
from lakd.data.workers import worker_iter

log = logging.getLogger("lakd.data")

STATE_VERSION = 1


class WorkerBatch(NamedTuple):
    """What a worker hands the main process: a batch, which worker made it, and that worker's position after it."""

    batch: dict
    worker: int
    position: WorkerPosition


class TrainShards(IterableDataset):
    """What one rank's DataLoader workers run: worker `w` reads span `rank * workers + (w + rotation) % workers`
    from its position on, and yields its own batches forever."""

    def __init__(self, urls, counts, *, seed, batch_size, crop_size, scales, mean, std, shuffle_buffer, rank,
                 world_size, num_workers, positions: list[WorkerPosition], rotation: int, warn: CorruptWarner,
                 num_classes=None, ignore_index=IGNORE_INDEX, max_pixels: int = MAX_PIXELS):
        super().__init__()
        self.urls, self.counts = urls, counts
        self.num_classes, self.ignore_index, self.max_pixels = num_classes, ignore_index, int(max_pixels)
        self.offsets = shard_offsets(counts)
        self.seed, self.batch_size, self.crop_size, self.scales = seed, batch_size, crop_size, scales
        self.mean, self.std, self.shuffle_buffer = mean, std, shuffle_buffer
        self.rank, self.W = rank, num_workers
        self.positions, self.rotation, self.warn = positions, rotation, warn
        self.slots = world_size * num_workers
        self.quota = span_size(int(sum(counts)), self.slots)

    def _decode(self, sample: dict, epoch: int, mean_t, std_t):
        img_b, lab_b, _ = sample_fields(sample, meta=False)
        image, label = decode_image(img_b, self.max_pixels), decode_label(lab_b, self.max_pixels)
        if self.num_classes is not None:
            check_label_values(label, self.num_classes, self.ignore_index)
        return train_transform(image, label, sample_rng(self.seed, epoch, sample["__index__"]),
                               crop_size=self.crop_size, scales=self.scales, mean_t=mean_t, std_t=std_t)

    def __iter__(self):
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
        L = ((info.id if info is not None else 0) + self.rotation) % self.W
        slot = self.rank * self.W + L
        start = self.positions[L]
        epoch, k0, counts = start.epoch, start.pos, dict(start.counts)
        mean_t, std_t = norm_tensors(self.mean, self.std)
        imgs, labs = [], []
        while True:
            good_before = counts["samples"]
            segs, perm = plan_span(self.counts, seed=self.seed, epoch=epoch, slot=slot, slots=self.slots,
                                   shuffle_buffer=self.shuffle_buffer)
            mask = None
            if k0 > 0:
                mask = np.zeros(self.quota, dtype=bool)
                mask[perm[k0:]] = True
            reader = read_segments(self.urls, self.offsets, segs, mask, counts, self.warn)
            for k, sample in in_order(perm, k0, reader):
                if sample is None:
                    counts["corrupt"] += 1
                    self.warn(f"sample at position {k} of epoch {epoch} (rank {self.rank}, worker {L}) is missing")
                else:
                    try:
                        x, y = self._decode(sample, epoch, mean_t, std_t)
                        imgs.append(x)
                        labs.append(y)
                        counts["samples"] += 1
                    except CorruptSample as exc:
                        counts["corrupt"] += 1
                        self.warn(f"{describe(sample)}: {exc}")
                if len(imgs) == self.batch_size:
                    batch = {"image": torch.stack(imgs), "label": torch.stack(labs)}
                    imgs, labs = [], []
                    yield WorkerBatch(batch, L, WorkerPosition(epoch, k + 1, dict(counts)))
            if counts["samples"] == good_before and k0 == 0:
                raise RuntimeError(f"lakd.data: no readable sample in a whole epoch of rank {self.rank}, worker {L} "
                                   f"({counts['corrupt']} corrupt so far); are the shards intact? "
                                   f"(lakd shards verify MANIFEST)")
            epoch += 1
            k0 = 0


class TrainStream:
    """Infinite iterator of training batches {"image": FloatTensor[B,3,h,w], "label": LongTensor[B,h,w]}.

    `state_dict()` after k batches + `load_state_dict()` on a fresh stream with the same arguments gives
    batches bitwise identical to batches k+1, k+2, ... of an uninterrupted run.
    """

    def __init__(self, manifest: Manifest, *, batch_size: int, crop_size, seed: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, scale_range=(0.5, 2.0), mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, shuffle_buffer: int = 256, pin_memory: bool = False,
                 num_classes: int | None = None, max_pixels: int = MAX_PIXELS):
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        crop_size = (int(crop_size[0]), int(crop_size[1]))
        if batch_size < 1 or min(crop_size) < 1:
            raise ValueError(f"batch_size and crop_size must be positive, got {batch_size}, {crop_size}")
        if not (0 <= rank < world_size):
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.manifest = manifest
        # the model's class count (the stage passes it); labels outside it make a sample corrupt
        self.num_classes = int(manifest.num_classes if num_classes is None else num_classes)
        self.ignore_index = int(manifest.ignore_index)
        self.batch_size, self.crop_size, self.seed = int(batch_size), crop_size, int(seed)
        self.rank, self.world_size, self.num_workers = int(rank), int(world_size), int(num_workers)
        self.W = max(1, self.num_workers)
        self.scales = scale_choices(scale_range)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values (RGB)")
        self.shuffle_buffer = int(shuffle_buffer)
        self.pin_memory = pin_memory
        self.max_pixels = int(max_pixels)  # decoded-size cap, handed to the workers with the dataset
        self.urls = manifest.shard_urls()
        self.counts = [int(c) for c in manifest.samples_per_shard]
        slots = self.world_size * self.W
        if manifest.total < slots:
            raise ValueError(f"{manifest.path}: {manifest.total} samples cannot feed {self.world_size} ranks x "
                             f"{self.W} workers = {slots} readers; use fewer workers or more data")
        self.quota = span_size(manifest.total, slots)
        self.samples_per_epoch = self.quota * self.W  # per rank
        self.warner = CorruptWarner()  # this loader's; worker processes warn through their copies
        self._positions = [WorkerPosition() for _ in range(self.W)]
        self._step = 0
        self._it = None

    @property
    def steps_per_epoch(self) -> int:
        """Batches per rank and epoch (batches may straddle epoch boundaries; the stream never ends)."""
        return max(1, self.samples_per_epoch // self.batch_size)

    @property
    def step(self) -> int:
        return self._step

    @property
    def stats(self) -> dict:
        """Counts summed over this rank's workers (`lakd.data.corrupt.COUNTERS`), steps and the furthest epoch."""
        out = {c: sum(int(p.counts[c]) for p in self._positions) for c in COUNTERS}
        out["steps"] = self._step
        out["epoch"] = max(p.epoch for p in self._positions)
        return out

    def _dataset(self) -> TrainShards:
        return TrainShards(self.urls, self.counts, seed=self.seed, batch_size=self.batch_size,
                           crop_size=self.crop_size, scales=self.scales, mean=self.mean, std=self.std,
                           shuffle_buffer=self.shuffle_buffer, rank=self.rank, world_size=self.world_size,
                           num_workers=self.W, positions=list(self._positions), rotation=self._step % self.W,
                           warn=self.warner, num_classes=self.num_classes, ignore_index=self.ignore_index,
                           max_pixels=self.max_pixels)

    def _make_iter(self):
        ds = self._dataset()
        if self.num_workers == 0:
            return iter(ds)
        return worker_iter(ds, self.num_workers, seed=self.seed, pin_memory=self.pin_memory)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._it is None:
            self._it = self._make_iter()
        batch, worker, position = next(self._it)
        self._positions[worker] = position
        self._step += 1
        if self.pin_memory and torch.cuda.is_available() and self.num_workers == 0:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        return batch

    def close(self) -> None:
        """Stop the worker processes (a later `next()` starts them again from the current state)."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def _topology(self) -> dict:
        return {"rank": self.rank, "world_size": self.world_size, "num_workers": self.W,
                "batch_size": self.batch_size, "seed": self.seed, "total": int(self.manifest.total),
                "shards": len(self.urls)}

    def state_dict(self) -> dict:
        """How far this rank got: the step, per worker its `WorkerPosition` (after the last batch handed out), and
        the set-up that makes the positions exact (rank, world size, workers, batch size, seed, data)."""
        return {"version": STATE_VERSION, "step": self._step, **self._topology(),
                "workers": [p.to_dict() for p in self._positions]}

    def load_state_dict(self, sd: dict) -> None:
        if not isinstance(sd, dict) or sd.get("version") != STATE_VERSION:
            raise ValueError(f"not a lakd TrainStream state (version {sd.get('version') if isinstance(sd, dict) else None})")
        self.close()
        step = int(sd["step"])
        mine = self._topology()
        theirs = {k: sd.get(k) for k in mine}
        self._step = step
        if theirs == mine:
            self._positions = [WorkerPosition.from_dict(w) for w in sd["workers"]]
            return
        # different rank / topology / data: continue from the same number of samples per rank, not bitwise exact
        diff = ", ".join(f"{k} {theirs[k]} -> {mine[k]}" for k in mine if theirs[k] != mine[k])
        log.warning("lakd.data: loader state saved with a different set-up (%s); resuming approximately "
                    "(same step and epoch progress, different sample order)", diff)
        self._positions = positions_after(step, workers=self.W, batch_size=self.batch_size, quota=self.quota)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def build_train_loader(manifest, *, batch_size: int, crop_size, seed: int, rank: int = 0, world_size: int = 1,
                       num_workers: int = 0, scale_range=(0.5, 2.0), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       shuffle_buffer: int = 256, allow_pipe: bool = False, **kw) -> TrainStream:
    """Infinite, resumable training stream over a shard manifest (a `Manifest` or a path to one).
    ``allow_pipe``: the user allows the manifest's `pipe:`/URL shard entries (see lakd.data.shards)."""
    manifest = load_manifest(manifest, allow_pipe=allow_pipe)
    return TrainStream(manifest, batch_size=batch_size, crop_size=crop_size, seed=seed, rank=rank,
                       world_size=world_size, num_workers=num_workers, scale_range=scale_range, mean=mean, std=std,
                       shuffle_buffer=shuffle_buffer, **kw)
