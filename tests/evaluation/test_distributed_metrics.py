"""All-reduce of per-rank confusion matrices over a real gloo process group (2 processes)."""
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lakd.evaluation.metrics import ConfusionMatrix
from lakd.net import free_port

C = 6


def _samples():
    rng = np.random.default_rng(11)
    return [(torch.from_numpy(rng.integers(0, C, (1, 8, 8))), torch.from_numpy(rng.integers(0, C, (1, 8, 8))))
            for _ in range(9)]


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cm = ConfusionMatrix(C)
        for i, (p, y) in enumerate(_samples()):
            if i % world == rank:  # disjoint parts, uneven sizes (5 and 4)
                cm.update(p, y)
        cm.all_reduce()
        torch.save(cm.mat, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_gloo_all_reduce_equals_single_pass(tmp_path):
    mp.start_processes(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    single = ConfusionMatrix(C)
    for p, y in _samples():
        single.update(p, y)
    for r in range(2):
        mat = torch.load(tmp_path / f"rank{r}.pt")
        assert mat.dtype == torch.int64
        assert torch.equal(mat, single.mat)
