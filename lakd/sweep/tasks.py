"""What runs inside a sweep job: build shards, train one stage, collect the results table.

These callables are pickled by submitit (Slurm executor) or called by the local executor. They carry only
the job's configuration, never resume state: a stage always resumes from the newest complete checkpoint of its
run directory (lakd.engine), so a requeued job, whatever pickle it was started from, continues where the
disk says.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import submitit


def _log(msg: str) -> None:
    print(f"[lakd sweep {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_dataset_shards(payload: dict) -> list[str]:
    """Build the splits of one dataset whose manifest is missing (lakd.data.build_shards); returns manifests."""
    from lakd.data import build_shards

    out = []
    for split, opts in payload["splits"].items():
        manifest = Path(payload["manifests"][split])
        if manifest.exists():
            _log(f"shards {payload['dataset']}/{split}: {manifest} exists, kept")
        else:
            if not payload.get("buildable", True):
                raise FileNotFoundError(f"manifest {manifest} (named in the config) does not exist")
            _log(f"shards {payload['dataset']}/{split}: building into {payload['out_dir']}")
            manifest = build_shards(payload["dataset"], split, payload["out_dir"], payload["root"],
                                    samples_per_shard=payload["samples_per_shard"], workers=payload["workers"],
                                    skip_bad=payload["skip_bad"], progress=False, **opts)
        out.append(str(manifest))
    return out


def _attempt_line(what: str) -> str:
    """``lakd: attempt N of job J: ...`` (the marker lakd.sweep.requeue looks for in a job's stderr)."""
    from lakd.sweep.requeue import job_id_from_env

    env = os.environ
    attempt = int(env.get("SLURM_RESTART_COUNT") or 0) + 1
    rank = f"rank {env.get('SLURM_PROCID', '0')} of {env.get('SLURM_NTASKS', '1')}"
    return f"lakd: attempt {attempt} of job {job_id_from_env() or '?'}: {what}, {rank} on {socket.gethostname()}"


class StageTask(submitit.helpers.Checkpointable):
    """One ``lakd train`` stage inside a submitit job (one task per GPU, possibly several nodes).

    Rank, world size and master address come from submitit's ``JobEnvironment`` (lakd.engine.distributed).
    On preemption / time limit the engine's signal flag makes every rank save at the next step boundary and
    raise ``Preempted``; every rank then exits with ``exit_codes.REQUEUE`` and the job's batch step requeues it
    (lakd.sweep.requeue). Should the signal arrive before the engine installed its handler, submitit's own
    handler calls :meth:`checkpoint`, which resubmits this same stateless task: it resumes from disk too.
    """

    def __init__(self, config: dict, label: str = "") -> None:
        self.config = config
        self.label = label

    def __call__(self) -> dict:
        from lakd.config import build_config
        from lakd.engine.preemption import Preempted
        from lakd.engine.stage import run_stage

        from lakd import exit_codes
        from lakd.config import ConfigError
        from lakd.engine.trainer import NonFiniteLoss

        cfg = build_config(self.config)
        print(_attempt_line(f"{self.label or cfg.stage} in {cfg.stage_dir}"), file=sys.stderr, flush=True)
        # the exit statuses of `lakd train`, so that the job's batch step (lakd.sweep.requeue) treats both alike;
        # SystemExit passes submitit's `except Exception`: no result pickle, the job does not count as done
        try:
            result = run_stage(cfg)
        except Preempted as exc:
            _log(f"{exc}; exiting with status {exit_codes.REQUEUE} so that the job is requeued")
            sys.exit(exit_codes.REQUEUE)
        except NonFiniteLoss as exc:
            _log(f"error: {exc}")
            sys.exit(exit_codes.DIVERGED)
        except ConfigError as exc:
            _log(f"error: {exc}")
            sys.exit(exit_codes.USAGE)
        return summarize(result)


def summarize(result: Any) -> dict:
    """The part of a stage's result a submitit result pickle should carry (mIoU values, not tensors)."""
    if not isinstance(result, dict):
        return {}
    ev = result.get("eval") or {}
    return {"stage": result.get("stage"), "run_name": result.get("run_name"), "steps": result.get("steps"),
            "miou": {k: (v or {}).get("miou") for k, v in ev.items() if isinstance(v, dict)}}


def collect_task(plan_summary: dict, sweep_dir: str) -> dict:
    """The final job of a sweep: write the results table of whatever finished."""
    from lakd.sweep.collect import write_results

    files = write_results(plan_summary, Path(sweep_dir))
    return {k: str(v) for k, v in files.items()}

