"""Process-group set-up from whichever launcher started us.

Detection order (first match wins):

1. ``RANK`` + ``WORLD_SIZE`` in the environment: torchrun, the ``deepspeed`` launcher, submitit's
   ``TorchDistributedEnvironment().export()``, or a user who set them;
2. a submitit job (``SUBMITIT_EXECUTOR``): ``submitit.JobEnvironment()`` (local and Slurm executors);
3. a Slurm job step started by ``srun`` (``SLURM_STEP_ID`` + ``SLURM_PROCID``): one task per GPU/CPU slot,
   master = first host of ``SLURM_STEP_NODELIST``;
4. Open MPI (``OMPI_COMM_WORLD_RANK``);
5. otherwise a single process.

``MASTER_PORT`` is taken from the environment, else derived from the Slurm/submitit job id (all tasks
agree without talking), else a free local port for single processes.  The result is exported back to
``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` because DeepSpeed and the data
pipeline read them.
"""
from __future__ import annotations

import datetime
import os
import re
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from lakd.net import free_port


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    launcher: str  # env | submitit | slurm | mpi | single


def expand_hostlist(spec: str) -> list[str]:
    """Expand a Slurm host list: ``"node[01-03,07],gpu-a"`` -> ``[node01, node02, node03, node07, gpu-a]``."""
    hosts: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,\[]*", spec):
        m = re.match(r"^(.*?)\[([^\]]*)\](.*)$", part)
        if not m:
            hosts.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for rng in ranges.split(","):
            lo, _, hi = rng.partition("-")
            if not hi:
                hosts.append(f"{prefix}{lo}{suffix}")
                continue
            width = len(lo)
            for i in range(int(lo), int(hi) + 1):
                hosts.append(f"{prefix}{i:0{width}d}{suffix}")
    return hosts


def _port_from_job(job_id: str) -> int:
    digits = re.sub(r"\D", "", job_id) or "0"
    return 20000 + int(digits) % 40000


def _int(env: dict, key: str, default: Optional[int] = None) -> int:
    value = env.get(key)
    if value is None or value == "":
        if default is None:
            raise KeyError(key)
        return default
    return int(value)


def detect(env: Optional[dict] = None) -> DistEnv:
    """Rank/world/master from the environment (see module docstring); pure, does not touch the environment."""
    env = dict(os.environ if env is None else env)
    port_env = env.get("MASTER_PORT")
    if "RANK" in env and "WORLD_SIZE" in env:
        world = _int(env, "WORLD_SIZE")
        local_world = _int(env, "LOCAL_WORLD_SIZE", world)
        return DistEnv(
            rank=_int(env, "RANK"), local_rank=_int(env, "LOCAL_RANK", 0), world_size=world,
            local_world_size=local_world, master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(port_env) if port_env else (29500 if world > 1 else free_port()), launcher="env",
        )
    if env.get("SUBMITIT_EXECUTOR"):
        import submitit

        job = submitit.JobEnvironment()
        world = job.num_tasks
        return DistEnv(
            rank=job.global_rank, local_rank=job.local_rank, world_size=world,
            local_world_size=max(1, world // max(1, job.num_nodes)),
            master_addr=job.hostnames[0] if world > 1 else "127.0.0.1",
            master_port=int(port_env) if port_env else _port_from_job(str(job.job_id)), launcher="submitit",
        )
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        world = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1))
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        nnodes = max(1, _int(env, "SLURM_STEP_NUM_NODES", _int(env, "SLURM_NNODES", 1)))
        job_id = env.get("SLURM_JOB_ID", "0")
        return DistEnv(
            rank=_int(env, "SLURM_PROCID"), local_rank=_int(env, "SLURM_LOCALID", 0), world_size=world,
            local_world_size=max(1, world // nnodes),
            master_addr=env.get("MASTER_ADDR") or expand_hostlist(nodes)[0],
            master_port=int(port_env) if port_env else _port_from_job(job_id), launcher="slurm",
        )
    if "OMPI_COMM_WORLD_RANK" in env:
        world = _int(env, "OMPI_COMM_WORLD_SIZE")
        return DistEnv(
            rank=_int(env, "OMPI_COMM_WORLD_RANK"), local_rank=_int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0),
            world_size=world, local_world_size=_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", world),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(port_env) if port_env else 29500, launcher="mpi",
        )
    if _int(env, "SLURM_NTASKS", 1) > 1 and "SLURM_PROCID" in env:
        warnings.warn(
            "Slurm allocated several tasks but this process was not started by srun: training on a single "
            "process. Launch with `srun` (one task per GPU/CPU slot) to use them all."
        )
    return DistEnv(0, 0, 1, 1, "127.0.0.1", int(port_env) if port_env else free_port(), "single")


def export(denv: DistEnv) -> None:
    """Write the detected values to the variables DeepSpeed, torch and webdataset read."""
    os.environ.update(
        RANK=str(denv.rank), LOCAL_RANK=str(denv.local_rank), WORLD_SIZE=str(denv.world_size),
        LOCAL_WORLD_SIZE=str(denv.local_world_size), MASTER_ADDR=denv.master_addr,
        MASTER_PORT=str(denv.master_port),
    )


def pick_device(denv: DistEnv, want: str = "auto") -> torch.device:
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but torch sees no CUDA device")
    index = denv.local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_process_group(denv: DistEnv, device: torch.device, *, backend: str = "auto",
                       timeout_s: int = 1800, with_deepspeed: bool = True) -> bool:
    """Initialise torch.distributed (and, unless ``with_deepspeed`` is False, DeepSpeed's comm layer on top).
    Returns True if this call created the process group (so the caller destroys it), False if one existed."""
    export(denv)
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() != denv.world_size or dist.get_rank() != denv.rank:
            raise RuntimeError(
                f"an existing process group (rank {dist.get_rank()}/{dist.get_world_size()}) disagrees with the "
                f"environment (rank {denv.rank}/{denv.world_size})"
            )
        created = False
    else:
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(
            backend=backend, init_method="env://", rank=denv.rank, world_size=denv.world_size,
            timeout=datetime.timedelta(seconds=timeout_s), **kwargs,
        )
        created = True
    if not with_deepspeed:
        return created
    import deepspeed

    deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False,
                               timeout=datetime.timedelta(seconds=timeout_s))
    return created


def destroy_process_group() -> None:
    """Tear down the process group and DeepSpeed's cached view of it (a later stage in this process
    builds fresh ones)."""
    import sys

    ds_comm = sys.modules.get("deepspeed.comm.comm")
    if ds_comm is not None and getattr(ds_comm, "cdb", None) is not None and dist.is_initialized():
        ds_comm.destroy_process_group()  # also releases DeepSpeed's group references
    elif dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if ds_comm is not None:
        ds_comm.cdb = None


# ------------------------------------------------------------------------------------- small collectives
def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (picklable, built by our own code; never read from disk)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
