"""`lakd train --stage {teacher,student,baseline} --config PRESET|FILE [key=value ...]`

Every process of a job runs this command: started by torchrun, the deepspeed launcher, srun (one task per
GPU/CPU slot), submitit, or alone. The stage resumes from the newest complete checkpoint of its run
directory. Exit statuses: `lakd.exit_codes`.
"""
from __future__ import annotations

import signal
import sys

from lakd import exit_codes

EPILOG = """\
examples:
  lakd train --stage teacher --config synthetic run.name=demo train.iters=200
  lakd train --stage student --config cityscapes run.name=r18 teacher.export=runs/r18/teacher/teacher.safetensors
  torchrun --nproc_per_node 4 -m lakd.cli train --stage teacher --config ade20k train.precision=bf16
  deepspeed --num_gpus 4 --module lakd.cli train --stage teacher --config ade20k train.deepspeed=ds.json
  srun --ntasks-per-node 4 lakd train --stage baseline --config voc run.runs_dir=/shared/runs

configuration: a preset name (%(presets)s) or a YAML file (optionally `base: <preset>`), then dotted
overrides `section.key=value` (YAML values). `lakd train --show-config ...` prints the resolved config.

exit status: 0 finished; 2 bad input (nothing written); 75 preempted (checkpoint saved: requeue / run
again to resume); 130 Ctrl-C (saved at the next step when it could: run again to resume); 3 non-finite
loss (last good checkpoint kept); 1 other failure (e.g. disk full: named with the file).
"""


def register(subparsers) -> None:
    import argparse

    from lakd.config import STAGES, list_presets

    p = subparsers.add_parser(
        "train", help="train a teacher, student or baseline stage (DeepSpeed; resumes automatically)",
        description="Train one stage of LAD from a preset or config file plus key=value overrides.",
        epilog=EPILOG % {"presets": ", ".join(list_presets())}, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--stage", required=True, choices=STAGES)
    p.add_argument("--config", required=True, metavar="PRESET|FILE",
                   help="a preset name or a YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.iters=100")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    # the deepspeed launcher passes --local_rank=N, torch.distributed.launch --local-rank=N (LOCAL_RANK may be
    # unset then): the value picks this process's GPU
    p.add_argument("--local_rank", "--local-rank", dest="train_local_rank", type=int, default=None,
                   metavar="N", help="local rank given by a launcher (sets LOCAL_RANK when it is unset)")
    p.set_defaults(func=run)


def apply_local_rank(value, environ=None) -> None:
    """Make a launcher's ``--local_rank`` the ``LOCAL_RANK`` that lakd.engine.distributed reads."""
    import os

    from lakd.cli import UsageError

    env = os.environ if environ is None else environ
    if value is None:
        return
    if value < 0:
        raise UsageError(f"--local_rank must be >= 0, got {value}")
    have = env.get("LOCAL_RANK")
    if have is not None and have.strip() != str(value):
        raise UsageError(f"--local_rank {value} disagrees with the environment's LOCAL_RANK={have}")
    env["LOCAL_RANK"] = str(value)


def run(args) -> int:
    from lakd.engine.preemption import SIGNALS, PreemptionFlag

    # catch the pre-timeout / preemption signals from the first moment (the imports and the start-up below take
    # seconds, and an uncaught SIGUSR2 kills the process without a word); the stage's own flag takes the
    # signal over and saves at the first step boundary. Ctrl-C keeps its default (stop at once) until then.
    early = PreemptionFlag().install(tuple(s for s in SIGNALS if s != signal.SIGINT))
    try:
        return _run(args)
    finally:
        early.restore()


def _run(args) -> int:
    from lakd.cli import UsageError
    from lakd.config import ConfigError, load_config

    local = args.train_local_rank if args.train_local_rank is not None else getattr(args, "local_rank", None)
    apply_local_rank(local)
    try:
        cfg = load_config(args.config, args.overrides, stage=args.stage)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.show_config:
        print(cfg.to_yaml(), end="")
        return exit_codes.OK

    from lakd.engine.checkpoint import CheckpointError
    from lakd.engine.preemption import Preempted
    from lakd.engine.stage import run_stage
    from lakd.engine.trainer import NonFiniteLoss
    from lakd.io import describe_os_error, is_disk_full
    from lakd.rundir import StageDir

    try:
        run_stage(cfg)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except Preempted as exc:
        print(f"lakd train: {exc}", file=sys.stderr, flush=True)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"lakd train: interrupted before a checkpoint could be saved; run the same command again to resume "
              f"from the newest checkpoint in {StageDir.of(cfg).checkpoints}", file=sys.stderr, flush=True)
        return exit_codes.INTERRUPTED
    except NonFiniteLoss as exc:
        print(f"lakd train: error: {exc}", file=sys.stderr, flush=True)
        return exit_codes.DIVERGED
    except CheckpointError as exc:
        print(f"lakd train: error: {exc}", file=sys.stderr, flush=True)
        return exit_codes.FAILED
    except RuntimeError as exc:
        if _peer_gone(exc):  # another process stopped (e.g. its disk write failed) and printed why
            print(f"lakd train: error: another process of this job stopped (its connection closed); its own "
                  f"error says why. Run the same command again to resume from the newest checkpoint in "
                  f"{cfg.stage_dir / 'checkpoints'}", file=sys.stderr, flush=True)
            return exit_codes.FAILED
        # the data stream found no decodable sample in a whole epoch (raised in a DataLoader worker, whose
        # traceback torch folds into the message): the last line says what is wrong and what to run
        cause = [line for line in str(exc).splitlines() if "lakd.data: no readable sample" in line]
        if not cause:
            raise
        print(f"lakd train: error: {cause[-1].split('RuntimeError: ')[-1]}", file=sys.stderr, flush=True)
        return exit_codes.USAGE
    except OSError as exc:
        if exc.filename is None and not is_disk_full(exc):
            raise  # not a file we failed to write: a bug, keep the traceback
        print(f"lakd train: error: {describe_os_error(exc, again='run the same command again to resume')}",
              file=sys.stderr, flush=True)
        return exit_codes.FAILED
    return exit_codes.OK


# what torch.distributed says when a peer process is gone (gloo; NCCL's watchdog raises DistBackendError)
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing")


def _peer_gone(exc: RuntimeError) -> bool:
    import torch.distributed as dist

    backend_error = getattr(dist, "DistBackendError", ())
    return (isinstance(exc, backend_error) if backend_error else False) or any(t in str(exc) for t in _PEER_GONE)
