"""Shared pytest set-up: keep thread counts small (2-core CI) and make runs deterministic."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# DeepSpeed picks its CPU accelerator by itself; saying so silences its detection warning.
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import pytest

# Variables an in-process stage exports for torch.distributed / DeepSpeed. A test that runs a stage in this
# process must not leak them into later tests' subprocesses (sbatch exports the caller's environment).
_LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _restore_launcher_environment():
    saved = {k: os.environ.get(k) for k in _LAUNCHER_VARS}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
