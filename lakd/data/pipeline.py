"""Streaming loaders over WebDataset shards: an infinite, exactly resumable training stream and a
whole-image evaluation loader.

How the training stream orders samples (everything is a pure function of seed, epoch, rank, world_size and
num_workers, so resuming is exact and skipping consumed samples needs no decoding):

1. Epoch `e`: the shards are permuted with a generator seeded by (seed, e) -- the same on every rank.
2. The permuted shards form one virtual sequence of `total` samples. It is cut into
   `world_size * num_workers` contiguous, *equal* runs of `total // (world_size * num_workers)` samples
   (the few samples left over change from epoch to epoch). Run `rank * num_workers + worker` belongs to that
   DataLoader worker of that rank. Every rank therefore gets exactly the same number of samples and steps
   per epoch (no DDP hang), and fewer shards than ranks x workers is fine: runs then share shards and each
   reader skips the members outside its run without decoding them.
3. Each run is shuffled by a shuffle buffer of `shuffle_buffer` samples whose draws come from a generator
   seeded by (seed, e, slot). The buffer's output order only depends on those draws, so it is computed up
   front as a permutation; samples are still read sequentially and held at most `shuffle_buffer` at a time.
4. Sample augmentation draws from a generator seeded by (seed, e, global sample index).
5. Each worker batches its own samples; DataLoader hands batches out round-robin over workers.

The state is, per worker, (epoch, samples of the epoch's run already consumed) plus the step count.
Restoring it re-creates the workers, rotates their roles so the round-robin continues where it stopped, and
each worker skips the consumed samples by reading only tar headers (local files) -- nothing is decoded.

Corrupt data (truncated tars, undecodable images or labels, label/image size mismatch, label values that are
neither a class id nor the ignore index) is skipped, counted in `stats["corrupt"]` and warned about (naming
the shard and key) at most every few seconds per process; it never stops the stream.

Label values are validated here, once per sample on the host side of the loader (`check_label_values`), so
the training step never checks them (on a GPU each check would be a host synchronisation).
"""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import tarfile
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lakd import IGNORE_INDEX
from lakd.data.manifest import Manifest, load_manifest
from lakd.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, CorruptSample, norm_tensors, decode_image,
                                  decode_label, eval_transform, sample_rng, scale_choices, train_transform)

log = logging.getLogger("lakd.data")

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")
LABEL_FIELD = "label.png"
STATE_VERSION = 1
_COUNTERS = ("samples", "corrupt", "truncated_shards")


# --------------------------------------------------------------------------------------------- warnings
class _RateLimitedWarning:
    """Warn about the first few problems, then at most once every `interval` seconds with a count."""

    def __init__(self, first: int = 5, interval: float = 30.0):
        self.first, self.interval = first, interval
        self.n = 0
        self.suppressed = 0
        self.last = 0.0

    def __call__(self, msg: str) -> None:
        self.n += 1
        now = time.monotonic()
        if self.n <= self.first or now - self.last >= self.interval:
            extra = f" ({self.suppressed} similar warnings suppressed)" if self.suppressed else ""
            log.warning("lakd.data: skipped corrupt data: %s%s", msg, extra)
            self.last = now
            self.suppressed = 0
        else:
            self.suppressed += 1


_warn = _RateLimitedWarning()


# ------------------------------------------------------------------------------------------ worker processes
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def _ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Slurm (scancel, preemption) and Ctrl-C signal the whole process group.
    A worker that died of it would crash the main process before it can save; so workers ignore these and
    the main process saves and shuts them down (they also exit by themselves when the main process dies)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


# ------------------------------------------------------------------------------------------ shard reading
def _open_shard(url: str):
    """(tarfile, closer) for a local path (random access: skipping members reads headers only) or a URL."""
    if url.startswith("pipe:") or "://" in url:
        try:
            from webdataset.gopen import gopen
        except ImportError:
            raise RuntimeError(f"shard {url}: URLs and pipe: shards are opened with webdataset, which is not "
                               "installed (pip install 'lakd[remote]')") from None

        stream = gopen(url, "rb")
        return tarfile.open(fileobj=stream, mode="r|"), stream
    f = open(url, "rb")
    try:
        return tarfile.open(fileobj=f, mode="r:"), f
    except Exception:
        f.close()
        raise


def _split_name(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    key, _, field = base.partition(".")
    return key, field


def iter_shard_range(url: str, start: int, stop: int, needed=None, stats: dict | None = None):
    """Yield (position, sample) for positions start..stop-1 of one shard, in order.

    `sample` is a dict {field: bytes, "__key__": tar key} or None when the position could not be read (the
    shard is truncated, unreadable or shorter than the manifest says). Positions for which `needed(pos)` is
    false are skipped without reading their bytes and are not yielded.
    """
    def bad(msg):
        _warn(msg)
        if stats is not None:
            stats["truncated_shards"] += 1

    pos = -1  # position of the sample being read
    try:
        tf, closer = _open_shard(url)
    except Exception as exc:
        bad(f"cannot open shard {url}: {type(exc).__name__}: {exc}")
        tf = closer = None
    if tf is not None:
        cur_key, cur, want = None, None, False
        try:
            try:
                for member in tf:
                    if not member.isfile():
                        continue
                    key, field = _split_name(member.name)
                    if key != cur_key:
                        if want:
                            yield pos, cur
                        pos += 1
                        cur_key, cur, want = key, None, False
                        if pos >= stop:
                            break
                        want = pos >= start and (needed is None or needed(pos))
                        if want:
                            cur = {"__key__": key}
                    if want:
                        cur[field] = tf.extractfile(member).read()
                else:  # the shard ended
                    if want:
                        yield pos, cur
                    pos += 1
                    if pos < stop:
                        bad(f"shard {url} holds {pos} samples, the manifest promises at least {stop}")
            except Exception as exc:  # truncated / garbage tar: the rest of this shard is lost
                bad(f"shard {url} unreadable at sample {max(pos, 0)}: {type(exc).__name__}: {exc}")
                if want:
                    yield pos, None
                pos += 1
        finally:
            try:
                tf.close()
                closer.close()
            except Exception:  # e.g. a `pipe:` reader killed by SIGPIPE because we stopped early
                pass
    for p in range(max(pos, start), stop):  # positions the shard could not deliver
        if needed is None or needed(p):
            yield p, None


# --------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class _Segment:
    shard: int  # index into the manifest's shard list
    start: int  # first position inside the shard
    stop: int


def _runs(counts: list[int], order: np.ndarray, bounds: list[tuple[int, int]]) -> list[list[_Segment]]:
    """Cut the virtual sequence (shards in `order`) into runs [a, b) -> list of shard segments per run."""
    starts = np.concatenate([[0], np.cumsum([counts[i] for i in order])])
    out = []
    for a, b in bounds:
        segs = []
        for j, sh in enumerate(order):
            s0, s1 = int(starts[j]), int(starts[j + 1])
            lo, hi = max(a, s0), min(b, s1)
            if lo < hi:
                segs.append(_Segment(int(sh), lo - s0, hi - s0))
        out.append(segs)
    return out


def shuffle_buffer_order(n: int, bufsize: int, rng: np.random.Generator) -> np.ndarray:
    """Output order of a shuffle buffer of size `bufsize` fed positions 0..n-1 (reservoir-style)."""
    if bufsize <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    u = rng.random(n)
    buf: list[int] = []
    out = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        if len(buf) < bufsize:
            buf.append(i)
            continue
        j = int(u[i] * bufsize)
        out[k] = buf[j]
        k += 1
        buf[j] = i
    rest = rng.permutation(len(buf))
    for j in rest:
        out[k] = buf[j]
        k += 1
    return out


def _gen(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words])))


def shard_order(seed: int, epoch: int, num_shards: int) -> np.ndarray:
    return _gen(seed, epoch, 0x5A4D).permutation(num_shards)


def _read_run(urls: list[str], offsets: list[int], segments: list[_Segment], needed_mask: np.ndarray | None,
              stats: dict):
    """Yield (virtual position within the run, sample) in increasing order over the run's segments."""
    base = 0
    for seg in segments:
        length = seg.stop - seg.start
        if needed_mask is not None and not needed_mask[base:base + length].any():
            base += length
            continue
        if needed_mask is None:
            needed = None
        else:
            m, b0, s0 = needed_mask, base, seg.start

            def needed(p, m=m, b0=b0, s0=s0):
                return bool(m[b0 + p - s0])
        for p, sample in iter_shard_range(urls[seg.shard], seg.start, seg.stop, needed, stats):
            if sample is not None:
                sample["__index__"] = offsets[seg.shard] + p
                sample["__url__"] = urls[seg.shard]
            yield base + p - seg.start, sample
        base += length


def _ordered(order: np.ndarray, start_k: int, reader):
    """Yield (k, sample) for k >= start_k following `order`, holding read-ahead samples in a dict."""
    pending: dict[int, dict | None] = {}
    for k in range(start_k, len(order)):
        p = int(order[k])
        while p not in pending:
            try:
                vp, s = next(reader)
            except StopIteration:
                pending[p] = None
                break
            pending[vp] = s
        yield k, pending.pop(p)


# ------------------------------------------------------------------------------------------------ decoding
def _fields(sample: dict, meta: bool = True) -> tuple[bytes, bytes, dict]:
    img = next((sample[f] for f in IMAGE_FIELDS if f in sample), None)
    if img is None:
        raise CorruptSample("no image member")
    lab = sample.get(LABEL_FIELD)
    if lab is None:
        raise CorruptSample("no label.png member")
    out = {}
    if meta and "json" in sample:
        try:
            out = json.loads(sample["json"])
        except Exception:
            out = {}
    return img, lab, out


def check_label_values(label, num_classes: int, ignore_index: int) -> None:
    """CorruptSample naming the label values that are neither a class id in [0, num_classes) nor
    `ignore_index`. `label` is a decoded 8-bit label image: one C pass over its pixels (PIL's histogram)."""
    hist = label.histogram()
    bad = [v for v in range(num_classes, len(hist)) if hist[v] and v != ignore_index]
    if bad:
        shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise CorruptSample(f"label value(s) {shown} ({sum(hist[v] for v in bad)} pixels) are neither a class id "
                            f"in [0, {num_classes}) nor the ignore index {ignore_index}")


def _describe(sample: dict | None, fallback: str) -> str:
    if not sample:
        return fallback
    return f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"


# ------------------------------------------------------------------------------------------- train stream
class _TrainIterable(IterableDataset):
    def __init__(self, urls, counts, *, seed, batch_size, crop_size, scales, mean, std, shuffle_buffer, rank,
                 world_size, num_workers, states, rotation, num_classes=None, ignore_index=IGNORE_INDEX):
        super().__init__()
        self.urls, self.counts = urls, counts
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.offsets = list(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)) if counts else []
        self.seed, self.batch_size, self.crop_size, self.scales = seed, batch_size, crop_size, scales
        self.mean, self.std, self.shuffle_buffer = mean, std, shuffle_buffer
        self.rank, self.world_size, self.W = rank, world_size, num_workers
        self.states, self.rotation = states, rotation
        self.total = int(sum(counts))
        self.n_slots = world_size * num_workers
        self.quota = self.total // self.n_slots

    def plan(self, epoch: int, slot: int) -> tuple[list[_Segment], np.ndarray]:
        order = shard_order(self.seed, epoch, len(self.urls))
        a = slot * self.quota
        segs = _runs(self.counts, order, [(a, a + self.quota)])[0]
        perm = shuffle_buffer_order(self.quota, self.shuffle_buffer, _gen(self.seed, epoch, slot, self.n_slots, 0x5F1))
        return segs, perm

    def __iter__(self):
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
        w = info.id if info is not None else 0
        L = (w + self.rotation) % self.W
        slot = self.rank * self.W + L
        st = self.states[L]
        epoch, k0 = int(st["epoch"]), int(st["pos"])
        stats = {c: int(st.get("stats", {}).get(c, 0)) for c in _COUNTERS}
        mean_t, std_t = norm_tensors(self.mean, self.std)
        imgs, labs = [], []
        while True:
            good_before = stats["samples"]
            segs, perm = self.plan(epoch, slot)
            mask = None
            if k0 > 0:
                mask = np.zeros(self.quota, dtype=bool)
                mask[perm[k0:]] = True
            reader = _read_run(self.urls, self.offsets, segs, mask, stats)
            for k, sample in _ordered(perm, k0, reader):
                if sample is None:
                    stats["corrupt"] += 1
                    _warn(f"sample at position {k} of epoch {epoch} (rank {self.rank}, worker {L}) is missing")
                else:
                    try:
                        img_b, lab_b, _ = _fields(sample, meta=False)
                        image, label = decode_image(img_b), decode_label(lab_b)
                        if self.num_classes is not None:
                            check_label_values(label, self.num_classes, self.ignore_index)
                        x, y = train_transform(image, label, sample_rng(self.seed, epoch, sample["__index__"]),
                                               crop_size=self.crop_size, scales=self.scales, mean_t=mean_t,
                                               std_t=std_t)
                        imgs.append(x)
                        labs.append(y)
                        stats["samples"] += 1
                    except CorruptSample as exc:
                        stats["corrupt"] += 1
                        _warn(f"{_describe(sample, '?')}: {exc}")
                if len(imgs) == self.batch_size:
                    batch = {"image": torch.stack(imgs), "label": torch.stack(labs),
                             "_lakd": {"worker": L, "epoch": epoch, "pos": k + 1, "stats": dict(stats)}}
                    imgs, labs = [], []
                    yield batch
            if stats["samples"] == good_before and k0 == 0:
                raise RuntimeError(f"lakd.data: no readable sample in a whole epoch of rank {self.rank}, worker {L} "
                                   f"({stats['corrupt']} corrupt so far); are the shards intact? "
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
                 prefetch_factor: int | None = None, multiprocessing_context=None, num_classes: int | None = None):
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
        self.scale_range = tuple(float(s) for s in scale_range)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values (RGB)")
        self.shuffle_buffer = int(shuffle_buffer)
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        self.urls = manifest.shard_urls()
        self.counts = [int(c) for c in manifest.samples_per_shard]
        slots = self.world_size * self.W
        if manifest.total < slots:
            raise ValueError(f"{manifest.path}: {manifest.total} samples cannot feed {self.world_size} ranks x "
                             f"{self.W} workers = {slots} readers; use fewer workers or more data")
        self.samples_per_epoch = (manifest.total // slots) * self.W  # per rank
        self._states = [self._fresh_state() for _ in range(self.W)]
        self._step = 0
        self._it = None

    @staticmethod
    def _fresh_state() -> dict:
        return {"epoch": 0, "pos": 0, "stats": {c: 0 for c in _COUNTERS}}

    @property
    def steps_per_epoch(self) -> int:
        """Batches per rank and epoch (batches may straddle epoch boundaries; the stream never ends)."""
        return max(1, self.samples_per_epoch // self.batch_size)

    @property
    def step(self) -> int:
        return self._step

    @property
    def stats(self) -> dict:
        out = {c: sum(int(s["stats"][c]) for s in self._states) for c in _COUNTERS}
        out["steps"] = self._step
        out["epoch"] = max(int(s["epoch"]) for s in self._states)
        return out

    def _dataset(self) -> _TrainIterable:
        return _TrainIterable(self.urls, self.counts, seed=self.seed, batch_size=self.batch_size,
                              crop_size=self.crop_size, scales=self.scales, mean=self.mean, std=self.std,
                              shuffle_buffer=self.shuffle_buffer, rank=self.rank, world_size=self.world_size,
                              num_workers=self.W, states=[dict(s) for s in self._states],
                              rotation=self._step % self.W, num_classes=self.num_classes,
                              ignore_index=self.ignore_index)

    def _make_iter(self):
        ds = self._dataset()
        if self.num_workers == 0:
            return iter(ds)
        kw = {}
        if self.prefetch_factor is not None:
            kw["prefetch_factor"] = self.prefetch_factor
        return iter(DataLoader(ds, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                               multiprocessing_context=self.multiprocessing_context,
                               worker_init_fn=_ignore_stop_signals, **kw))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._it is None:
            self._it = self._make_iter()
        batch = next(self._it)
        meta = batch.pop("_lakd")
        L = int(meta["worker"])
        self._states[L] = {"epoch": int(meta["epoch"]), "pos": int(meta["pos"]),
                           "stats": {c: int(meta["stats"][c]) for c in _COUNTERS}}
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
        return {"version": STATE_VERSION, "step": self._step, **self._topology(),
                "workers": [{"epoch": s["epoch"], "pos": s["pos"], "stats": dict(s["stats"])} for s in self._states]}

    def load_state_dict(self, sd: dict) -> None:
        if not isinstance(sd, dict) or sd.get("version") != STATE_VERSION:
            raise ValueError(f"not a lakd TrainStream state (version {sd.get('version') if isinstance(sd, dict) else None})")
        self.close()
        step = int(sd["step"])
        mine = self._topology()
        theirs = {k: sd.get(k) for k in mine}
        if theirs == mine:
            self._states = [{"epoch": int(s["epoch"]), "pos": int(s["pos"]),
                             "stats": {c: int(s.get("stats", {}).get(c, 0)) for c in _COUNTERS}} for s in sd["workers"]]
            self._step = step
            return
        # different rank / topology / data: continue from the same number of samples per rank, not bitwise exact
        diff = ", ".join(f"{k} {theirs[k]} -> {mine[k]}" for k in mine if theirs[k] != mine[k])
        log.warning("lakd.data: loader state saved with a different set-up (%s); resuming approximately "
                    "(same step and epoch progress, different sample order)", diff)
        self._step = step
        self._states = self._states_from_step(step)

    def _states_from_step(self, step: int) -> list[dict]:
        """Per-worker state after `step` batches assuming no sample was skipped."""
        quota = self.manifest.total // (self.world_size * self.W)
        out = []
        for L in range(self.W):
            nb = (step - L + self.W - 1) // self.W if step > L else 0
            consumed = nb * self.batch_size
            out.append({"epoch": consumed // quota, "pos": consumed % quota,
                        "stats": {c: 0 for c in _COUNTERS}})
        return out

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def build_train_loader(manifest, *, batch_size: int, crop_size, seed: int, rank: int = 0, world_size: int = 1,
                       num_workers: int = 0, scale_range=(0.5, 2.0), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       shuffle_buffer: int = 256, allow_pipe: bool = False, **kw) -> TrainStream:
    """Infinite, resumable training stream over a shard manifest (a `Manifest` or a path to one).
    ``allow_pipe``: the user allows the manifest's `pipe:`/URL shard entries (see lakd.data.manifest)."""
    manifest = load_manifest(manifest, allow_pipe=allow_pipe)
    return TrainStream(manifest, batch_size=batch_size, crop_size=crop_size, seed=seed, rank=rank,
                       world_size=world_size, num_workers=num_workers, scale_range=scale_range, mean=mean, std=std,
                       shuffle_buffer=shuffle_buffer, **kw)


# -------------------------------------------------------------------------------------------- eval loader
def _balanced_bounds(n: int, parts: int, i: int) -> tuple[int, int]:
    return (i * n) // parts, ((i + 1) * n) // parts


class _EvalIterable(IterableDataset):
    def __init__(self, urls, counts, a, b, num_workers, mean, std, num_classes, ignore_index):
        super().__init__()
        self.urls, self.counts, self.a, self.b, self.W = urls, counts, a, b, num_workers
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.offsets = list(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)) if counts else []
        self.mean, self.std = mean, std

    def __iter__(self):
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
        w = info.id if info is not None else 0
        n = self.b - self.a
        lo, hi = _balanced_bounds(n, self.W, w)
        segs = _runs(self.counts, np.arange(len(self.urls)), [(self.a + lo, self.a + hi)])[0]
        stats = {c: 0 for c in _COUNTERS}
        mean_t, std_t = norm_tensors(self.mean, self.std)
        for vp, sample in _read_run(self.urls, self.offsets, segs, None, stats):
            item = {"_lakd": None}
            if sample is None:
                stats["corrupt"] += 1
                _warn(f"evaluation sample {self.a + lo + vp} is missing")
            else:
                try:
                    img_b, lab_b, meta = _fields(sample)
                    label = decode_label(lab_b)
                    check_label_values(label, self.num_classes, self.ignore_index)
                    x, y = eval_transform(decode_image(img_b), label, mean_t=mean_t, std_t=std_t)
                    item.update(image=x.unsqueeze(0), label=y.unsqueeze(0),
                                key=[str(meta.get("key", sample["__key__"]))])
                    stats["samples"] += 1
                except CorruptSample as exc:
                    stats["corrupt"] += 1
                    _warn(f"{_describe(sample, '?')}: {exc}")
            item["_lakd"] = {"worker": w, "stats": dict(stats)}
            yield item


class EvalLoader:
    """Whole images of this rank's part of the split, one at a time:
    {"image": FloatTensor[1,3,H,W], "label": LongTensor[1,H,W], "key": [str]}.

    Ranks get disjoint, contiguous parts whose sizes differ by at most one image; together they cover the
    split exactly once. Corrupt samples are skipped and counted in `stats["corrupt"]`.
    """

    def __init__(self, manifest: Manifest, *, rank: int = 0, world_size: int = 1, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, num_workers: int = 0, num_classes: int | None = None):
        if not (0 <= rank < world_size):
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.manifest = manifest
        self.num_classes = int(manifest.num_classes if num_classes is None else num_classes)
        self.rank, self.world_size, self.num_workers = rank, world_size, int(num_workers)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.urls = manifest.shard_urls()
        self.counts = [int(c) for c in manifest.samples_per_shard]
        self.a, self.b = _balanced_bounds(manifest.total, world_size, rank)
        self._worker_stats: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.b - self.a

    @property
    def stats(self) -> dict:
        return {c: sum(s[c] for s in self._worker_stats.values()) for c in _COUNTERS}

    def __iter__(self):
        W = max(1, min(self.num_workers, len(self)))
        ds = _EvalIterable(self.urls, self.counts, self.a, self.b, W, self.mean, self.std, self.num_classes,
                           int(self.manifest.ignore_index))
        self._worker_stats = {}
        it = iter(ds) if self.num_workers == 0 else iter(DataLoader(ds, batch_size=None, num_workers=W,
                                                                    worker_init_fn=_ignore_stop_signals))
        for item in it:
            meta = item.pop("_lakd")
            self._worker_stats[int(meta["worker"])] = meta["stats"]
            if "image" in item:
                yield item


def build_eval_loader(manifest, *, rank: int = 0, world_size: int = 1, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      num_workers: int = 0, num_classes: int | None = None, allow_pipe: bool = False) -> EvalLoader:
    """Evaluation loader of whole images over a shard manifest (a `Manifest` or a path to one)."""
    manifest = load_manifest(manifest, allow_pipe=allow_pipe)
    return EvalLoader(manifest, rank=rank, world_size=world_size, mean=mean, std=std,
                      num_workers=num_workers, num_classes=num_classes)
