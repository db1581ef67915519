"""Which samples each rank and DataLoader worker of the training stream reads, in which order, and how far it got.

Everything is a pure function of seed, epoch, rank, world_size and num_workers, so resuming is exact and skipping
consumed samples needs no decoding:

1. Epoch `e`: the shards are permuted with a generator seeded by (seed, e) -- the same on every rank.
2. The permuted shards form one virtual sequence of `total` samples. It is cut into `world_size * num_workers`
   contiguous, *equal* spans of `total // (world_size * num_workers)` samples (the few samples left over change
   from epoch to epoch). Span `slot = rank * num_workers + worker` belongs to that DataLoader worker of that
   rank. Every rank therefore gets exactly the same number of samples and steps per epoch (no DDP hang), and
   fewer shards than ranks x workers is fine: spans then share shards and each reader skips the members
   outside its span without decoding them.
3. Each span is shuffled by a shuffle buffer of `shuffle_buffer` samples whose draws come from a generator
   seeded by (seed, e, slot). The buffer's output order only depends on those draws, so it is computed up
   front as a permutation; samples are still read sequentially and held at most `shuffle_buffer` at a time.

A worker's place in this order is a `WorkerPosition`: its epoch and how many samples of that epoch's span it
has consumed (read or found corrupt), plus its running counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lakd.data.corrupt import new_counts


@dataclass(frozen=True)
class Segment:
    """Positions [start, stop) of one shard (an index into the manifest's shard list)."""

    shard: int
    start: int
    stop: int


def spans(counts: list[int], order: np.ndarray, bounds: list[tuple[int, int]]) -> list[list[Segment]]:
    """Cut the virtual sequence (shards in `order`) at each [a, b) of `bounds` into the shard segments it covers."""
    starts = np.concatenate([[0], np.cumsum([counts[i] for i in order])])
    out = []
    for a, b in bounds:
        segs = []
        for j, sh in enumerate(order):
            s0, s1 = int(starts[j]), int(starts[j + 1])
            lo, hi = max(a, s0), min(b, s1)
            if lo < hi:
                segs.append(Segment(int(sh), lo - s0, hi - s0))
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


def seeded(*words: int) -> np.random.Generator:
    """A generator that depends only on `words` (each taken modulo 2**32)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words])))


def shard_order(seed: int, epoch: int, num_shards: int) -> np.ndarray:
    return seeded(seed, epoch, 0x5A4D).permutation(num_shards)


def span_size(total: int, slots: int) -> int:
    """Samples per reader (rank x worker) and epoch."""
    return total // slots


def plan_span(counts: list[int], *, seed: int, epoch: int, slot: int, slots: int,
              shuffle_buffer: int) -> tuple[list[Segment], np.ndarray]:
    """The shard segments of reader `slot`'s span in `epoch`, and the order (positions within the span) in
    which its shuffle buffer hands them out."""
    quota = span_size(int(sum(counts)), slots)
    a = slot * quota
    segs = spans(counts, shard_order(seed, epoch, len(counts)), [(a, a + quota)])[0]
    perm = shuffle_buffer_order(quota, shuffle_buffer, seeded(seed, epoch, slot, slots, 0x5F1))
    return segs, perm


def in_order(order: np.ndarray, start_k: int, reader):
    """Yield (k, sample) for k >= start_k following `order`, from `reader`'s (position, sample) pairs in
    increasing position, holding the samples read ahead in a dict."""
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


def balanced_bounds(n: int, parts: int, i: int) -> tuple[int, int]:
    """[a, b) of part `i` when n items are cut into `parts` contiguous parts differing by at most one."""
    return (i * n) // parts, ((i + 1) * n) // parts


@dataclass
class WorkerPosition:
    """How far one worker of one rank got: `pos` samples of epoch `epoch`'s span consumed, and its counts."""

    epoch: int = 0
    pos: int = 0
    counts: dict = field(default_factory=new_counts)

    def to_dict(self) -> dict:
        return {"epoch": int(self.epoch), "pos": int(self.pos), "stats": dict(self.counts)}

    @classmethod
    def from_dict(cls, d: dict) -> "WorkerPosition":
        counts = new_counts()
        counts.update({c: int(v) for c, v in d.get("stats", {}).items() if c in counts})
        return cls(int(d["epoch"]), int(d["pos"]), counts)


def positions_after(step: int, *, workers: int, batch_size: int, quota: int) -> list[WorkerPosition]:
    """Per-worker positions after `step` batches handed out round-robin, assuming no sample was corrupt."""
    out = []
    for w in range(workers):
        batches = (step - w + workers - 1) // workers if step > w else 0
        consumed = batches * batch_size
        out.append(WorkerPosition(consumed // quota, consumed % quota))
    return out
