"""DataLoader worker processes of the loaders: how they are started and how they meet stop signals."""
from __future__ import annotations

import signal

import torch
from torch.utils.data import DataLoader, IterableDataset

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Slurm (scancel, preemption) and Ctrl-C signal the whole process group.
    A worker that died of it would crash the main process before it can save; so workers ignore these and
    the main process saves and shuts them down (they also exit by themselves when the main process dies)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def worker_iter(dataset: IterableDataset, num_workers: int, *, seed: int, **kw):
    """Iterator over `dataset`'s items (one item = one batch) produced by `num_workers` worker processes.

    Starting the workers draws their base seed from the DataLoader's generator, by default torch's global one,
    which would shift the training's random stream at every (re)start; a generator of the loader's own keeps
    the loader out of it."""
    own = torch.Generator().manual_seed(int(seed))
    return iter(DataLoader(dataset, batch_size=None, num_workers=num_workers, worker_init_fn=ignore_stop_signals,
                           generator=own, **kw))
