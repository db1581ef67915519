"""Helpers of the engine tests: a tiny stage config, a multi-process launcher, weight comparison."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lakd.net import free_port

REPO = Path(__file__).resolve().parents[2]
HOOKS = Path(__file__).resolve().parent / "_hooks.py"
LAUNCH_TIMEOUT = 400  # seconds per launch; a 2-core CI machine runs one in ~10 s


# the variables launchers set: an in-process stage test removes them so that it runs as one process
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "SLURM_PROCID", "SLURM_STEP_ID", "SUBMITIT_EXECUTOR", "OMPI_COMM_WORLD_RANK")


def tiny_args(shards: Path, runs: Path, name: str, **over) -> list[str]:
    """Overrides for a stage that trains in seconds on CPU (width-0.125 DeepLabV3-R18, 32 px crops)."""
    opts = {
        "data.shards_dir": str(shards), "run.runs_dir": str(runs), "run.name": name,
        "train.iters": 6, "train.batch_size": 4, "data.crop_size": "[32,32]", "eval.every": 3,
        "checkpoint.every": 2, "log.progress": "plain", "log.print_every": 1,
    }
    opts.update(over)
    return [f"{k}={v}" for k, v in opts.items()]


def base_env(**extra) -> dict:
    env = dict(os.environ)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "SLURM_PROCID", "SLURM_STEP_ID", "SUBMITIT_EXECUTOR", "LAKD_TEST_HOOK"):
        env.pop(key, None)
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    env.update(extra)
    return env


@dataclass
class Launch:
    codes: list[int]
    outputs: list[str]

    @property
    def text(self) -> str:
        return "\n".join(f"----- rank {r} (exit {c}) -----\n{o}" for r, (c, o) in
                         enumerate(zip(self.codes, self.outputs)))


def launch(nproc: int, args: list[str], *, hook: str | None = None, single: bool = False) -> Launch:
    """Start ``nproc`` processes of ``lakd train ARGS`` with RANK/WORLD_SIZE/... set (the env launcher); with
    ``single`` one process and no launcher variables at all. ``hook``: see tests/engine/_hooks.py."""
    port = free_port()
    procs = []
    for rank in range(nproc):
        extra = {} if single else dict(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                                       LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=str(port))
        if hook:
            extra["LAKD_TEST_HOOK"] = hook
        procs.append(subprocess.Popen([sys.executable, str(HOOKS), "train", *args], env=base_env(**extra),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
    return collect(procs)


def collect(procs, timeout: float = LAUNCH_TIMEOUT) -> Launch:
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outputs.append(out)
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        outputs += [p.communicate()[0] for p in procs[len(outputs):]]
        raise AssertionError("launch timed out:\n" + Launch([p.returncode for p in procs], outputs).text)
    return Launch([p.returncode for p in procs], outputs)


def load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_weights(a), load_weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not (wa[k].dtype == wb[k].dtype and bool((wa[k] == wb[k]).all()))]
    assert not differ, f"{len(differ)} tensors differ between {a} and {b}, e.g. {differ[:5]}"
