"""lakd.data.prefetch.Prefetcher: same batches as the stream, exact resume from its state, rewind on close,
errors raised in the consumer."""
from __future__ import annotations

import pytest
import torch

from lakd.data import build_shards, build_train_loader
from lakd.data.prefetch import Prefetcher


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return build_shards("synthetic", "train", tmp_path_factory.mktemp("pf"), num_samples=24, image_size=32,
                        seed=0, samples_per_shard=8, workers=1, progress=False)


def _stream(m, workers=2):
    return build_train_loader(m, batch_size=2, crop_size=16, seed=0, num_workers=workers, shuffle_buffer=4)


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
                                    for x, y in zip(a, b))


def test_same_batches_and_exact_resume(shards):
    ref_stream = _stream(shards)
    ref = [next(ref_stream) for _ in range(10)]
    ref_stream.close()
    p = Prefetcher(_stream(shards), depth=2)
    got = [next(p) for _ in range(4)]
    assert _same(got, ref[:4])
    sd = p.state_dict()  # the thread has taken batches 5 and 6 already: the state must not count them
    assert sd["step"] == 4
    got += [next(p) for _ in range(2)]
    p.close()  # rewinds to the last batch handed out ...
    got += [next(p) for _ in range(2)]  # ... so nothing is lost or repeated
    assert _same(got, ref[:8])
    p.close()
    fresh = Prefetcher(_stream(shards))
    fresh.load_state_dict(sd)
    assert _same([next(fresh) for _ in range(6)], ref[4:10])
    fresh.load_state_dict(sd)  # while its thread runs
    assert _same([next(fresh) for _ in range(2)], ref[4:6])
    assert fresh.stats["steps"] >= 6 and fresh.steps_per_epoch == ref_stream.steps_per_epoch
    fresh.close()


class _Failing:
    def __init__(self, fail_at):
        self.n, self.fail_at = 0, fail_at

    def __next__(self):
        self.n += 1
        if self.n == self.fail_at:
            raise RuntimeError("worker died")
        return {"n": self.n}

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, sd):
        self.n = sd["n"]

    def close(self):
        pass


def test_errors_reach_the_consumer_in_order():
    p = Prefetcher(_Failing(4))
    assert [next(p)["n"] for _ in range(3)] == [1, 2, 3]
    with pytest.raises(RuntimeError, match="worker died"):
        next(p)
    assert p.state_dict() == {"n": 3}
    p.close()


def test_prefetched_worker_stream_leaves_torch_random_state_alone(shards):
    """The training loop takes batches without guarding torch's global RNG: the stream as the stage builds it
    (workers behind a prefetch thread, started again after a restore) must not draw from it."""
    torch.manual_seed(5)
    before = torch.get_rng_state()
    p = Prefetcher(_stream(shards))
    [next(p) for _ in range(3)]
    p.load_state_dict(p.state_dict())  # restarts the workers
    [next(p) for _ in range(3)]
    p.close()
    assert torch.equal(torch.get_rng_state(), before)
