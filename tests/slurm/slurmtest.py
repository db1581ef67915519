"""Helpers of the Slurm tests: submit, signal, wait for and inspect jobs of the test cluster; compare weights."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SLOWSTEP = Path(__file__).resolve().parent / "slowstep"
TEST_SHARDS = {"train": {"num_samples": 32, "image_size": 64}, "val": {"num_samples": 8, "image_size": 64}}
SAMPLES_PER_SHARD = 16
# one tiny teacher stage: 16 steps of batch 4 (splits over 1 or 2 processes), a checkpoint every 4 steps
# the tiny sweep's model (lakd/sweeps/tiny.yaml), so that `sbatch slurm/teacher.sh --config synthetic` trains the
# same teacher as the sweep
STAGE_OVERRIDES = {"train.iters": 16, "train.batch_size": 4, "checkpoint.every": 4, "eval.every": 0,
                   "log.print_every": 4, "dist.timeout_s": 60, "data.num_workers": 0, "model.name": "deeplabv3",
                   "model.backbone": "resnet18", "model.width": 0.125}


def cluster_problem() -> str | None:
    """Why the Slurm tests cannot run here, or None."""
    if os.environ.get("LAKD_SLURM_SKIP"):
        return os.environ["LAKD_SLURM_SKIP"]
    if shutil.which("sbatch") is None:
        return "sbatch not found: start the test cluster (bash slurm/testcluster/start.sh, as root) or run `make test`"
    r = subprocess.run(["bash", str(REPO / "slurm/testcluster/status.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        return r.stdout.strip() or r.stderr.strip()
    return None


def stage_args(shards: Path, runs: Path, run_name: str, **extra) -> list[str]:
    """`lakd train` key=value arguments of the tiny test stage."""
    kv = dict(STAGE_OVERRIDES, **{"data.shards_dir": str(shards), "run.runs_dir": str(runs), "run.name": run_name})
    kv.update(extra)
    return [f"{k}={v}" for k, v in kv.items()]


class Slurm:
    """Submit / signal / wait / inspect jobs of the test cluster."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        venv_bin = str(Path(sys.executable).parent)
        self.env = dict(os.environ, PATH=f"{venv_bin}:{os.environ.get('PATH', '')}", LAKD_PYTHON=sys.executable,
                        PYTHONUNBUFFERED="1")

    def with_step_delay(self, seconds: float) -> dict:
        """The job environment with every training step slowed down (tests/slurm/slowstep)."""
        path = os.pathsep.join(p for p in (str(SLOWSTEP), self.env.get("PYTHONPATH", "")) if p)
        return dict(self.env, PYTHONPATH=path, LAKD_TEST_STEP_DELAY=str(seconds))

    def sbatch(self, script: str, sbatch_args: list[str], script_args: list[str], env: dict | None = None) -> str:
        cmd = ["sbatch", "--parsable", *sbatch_args, str(REPO / script), *script_args]
        r = subprocess.run(cmd, cwd=self.workdir, env=env or self.env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr}"
        return r.stdout.strip().split(";")[0]

    def run(self, cmd: list[str], env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=self.workdir, env=env or self.env, capture_output=True, text=True,
                              timeout=timeout)

    @staticmethod
    def queued(job: str) -> bool:
        r = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i"], capture_output=True, text=True)
        return r.returncode == 0 and bool(r.stdout.strip())

    def wait_gone(self, job: str, timeout: float = 300, what: str = "") -> float:
        t0 = time.monotonic()
        while self.queued(job):
            if time.monotonic() - t0 > timeout:
                subprocess.run(["scancel", job])
                raise AssertionError(f"job {job} {what} still queued after {timeout} s (cancelled)\n"
                                     + self.tail_logs())
            time.sleep(0.5)
        return time.monotonic() - t0

    @staticmethod
    def wait_for(cond, timeout: float, what: str, poll: float = 0.2):
        t0 = time.monotonic()
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(poll)

    @staticmethod
    def sacct(jobs: str) -> list[dict]:
        """sacct rows (allocations) as dicts; polls briefly, accounting lags behind the queue."""
        fields = ["JobID", "JobName", "State", "ExitCode", "Start", "End", "NodeList"]
        for _ in range(40):
            r = subprocess.run(["sacct", "-n", "-P", "-X", "-j", jobs, "-o", ",".join(fields)],
                               capture_output=True, text=True)
            rows = [dict(zip(fields, line.split("|"))) for line in r.stdout.splitlines() if line]
            if rows and all(row["End"] not in ("", "Unknown") for row in rows):
                return rows
            time.sleep(0.5)
        return rows

    @staticmethod
    def signal(job: str, sig: str = "USR2", batch: bool = False) -> None:
        """What Slurm does before a time limit (--signal=USR2@N, or --signal=B:USR2@N with ``batch``: to the batch
        step only), but now: Slurm checks limits only every ~30 s."""
        subprocess.run(["scancel", f"--signal={sig}", *(["--batch"] if batch else []), job], check=True)

    @staticmethod
    def job_processes(job: str, rank: int | None = None) -> list[int]:
        """PIDs of this job's task processes (python, not the srun/slurmstepd around them), by /proc environ."""
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                env = dict(kv.split("=", 1) for kv in (d / "environ").read_bytes().decode(errors="replace").split("\0")
                           if "=" in kv)
                comm = (d / "comm").read_text().strip()
            except OSError:
                continue
            if env.get("SLURM_JOB_ID") != job or not comm.startswith("python") or "SLURM_STEP_ID" not in env:
                continue
            if env.get("SLURM_STEP_ID") == "batch" or (rank is not None and env.get("SLURM_PROCID") != str(rank)):
                continue
            pids.append(int(d.name))
        return pids

    def tail_logs(self, n: int = 40) -> str:
        out = []
        for f in sorted(self.workdir.rglob("*.out")) + sorted(self.workdir.rglob("*_log.err")):
            out.append(f"--- {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-n:]))
        return "\n".join(out)


def load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_weights(a), load_weights(b)
    assert wa.keys() == wb.keys(), f"{a} and {b} hold different tensors"
    diff = [k for k in wa if not (wa[k].dtype == wb[k].dtype and wa[k].shape == wb[k].shape and wa[k].equal(wb[k]))]
    assert not diff, f"{len(diff)} of {len(wa)} tensors differ between {a} and {b}, e.g. {diff[:3]}"


def metrics_steps(stage_dir: Path) -> list[int]:
    steps = []
    for line in (stage_dir / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in rec:
            steps.append(int(rec["step"]))
    return steps


def latest_step(stage_dir: Path) -> int:
    """Step of the newest complete checkpoint (0: none yet)."""
    latest = stage_dir / "checkpoints" / "latest"
    if not latest.exists():
        return 0
    m = re.search(r"(\d+)", latest.read_text())
    return int(m.group(1)) if m else 0
