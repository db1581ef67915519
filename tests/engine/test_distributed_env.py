"""Rank / local rank / world size / master address from whichever launcher started the process."""
from __future__ import annotations

import pytest

from lakd.engine.distributed import detect, expand_hostlist


def test_torchrun_and_deepspeed_launcher_variables():
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "n1",
           "MASTER_PORT": "29400", "SLURM_PROCID": "0", "SLURM_STEP_ID": "0"}  # RANK wins over Slurm's
    d = detect(env)
    assert (d.rank, d.local_rank, d.world_size, d.local_world_size, d.master_addr, d.master_port, d.launcher) == (
        3, 1, 4, 2, "n1", 29400, "env")


def test_srun_step():
    env = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8",
           "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456"}
    d = detect(env)
    assert (d.rank, d.local_rank, d.world_size, d.local_world_size, d.master_addr) == (5, 1, 8, 4, "gpu07")
    assert d.launcher == "slurm" and 20000 <= d.master_port < 60000
    assert d.master_port == detect({**env, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}).master_port


def test_sbatch_without_srun_is_a_single_process():
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "a[1-2]", "SLURM_JOB_ID": "9"}
    with pytest.warns(UserWarning, match="not started by srun"):
        d = detect(env)
    assert (d.rank, d.world_size, d.launcher) == (0, 1, "single")


def test_submitit_local_job():
    pytest.importorskip("submitit")
    env = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "4242", "SUBMITIT_LOCAL_NTASKS": "2",
           "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_GLOBALID": "1",
           "SUBMITIT_LOCAL_LOCALID": "1", "SUBMITIT_FOLDER": "/tmp"}
    import os

    saved = dict(os.environ)
    os.environ.update(env)  # submitit.JobEnvironment reads os.environ itself
    try:
        d = detect(env)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert (d.rank, d.local_rank, d.world_size, d.launcher) == (1, 1, 2, "submitit")


def test_mpi_and_single():
    d = detect({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1"})
    assert (d.rank, d.world_size, d.local_rank, d.launcher) == (1, 2, 1, "mpi")
    d = detect({})
    assert (d.rank, d.world_size, d.launcher) == (0, 1, "single") and d.master_port > 0


def test_hostlist_expansion():
    assert expand_hostlist("node[01-03,07],gpu-a,x[9-10]b") == [
        "node01", "node02", "node03", "node07", "gpu-a", "x9b", "x10b"]
    assert expand_hostlist("localhost") == ["localhost"]
