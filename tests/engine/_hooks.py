"""Run `lakd` with test-only fault injection, through the train loop's public callbacks
(lakd.engine.callbacks.register): production code runs unchanged.

    LAKD_TEST_HOOK="signal:<rank>:<step>"  send SIGUSR1 to this process when <rank> starts step <step> (1-based)
    LAKD_TEST_HOOK="kill_save:<rank>:<step>"  SIGKILL <rank> right after it wrote its files of the checkpoint of
                                              <step>, before the commit, leaving DeepSpeed's model-states file
                                              truncated (as a kill in the middle of writing it would)
    LAKD_TEST_HOOK="nan:<rank>:<step>"        make the loss of <rank> NaN at step <step> (a NaN weight)

    python tests/engine/_hooks.py train --stage teacher --config ...
"""
import os
import signal
import sys

import torch

from lakd.engine.callbacks import Callback, register


class SignalAt(Callback):
    """SIGUSR1 to this process as the (1-based) step ``step`` starts."""

    def __init__(self, step: int):
        self.step = step

    def on_step_start(self, trainer, step):
        if step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


class NaNAt(Callback):
    """One weight of this rank becomes NaN as step ``step`` starts: the step's loss is NaN on this rank only."""

    def __init__(self, step: int):
        self.step = step

    def on_step_start(self, trainer, step):
        if step + 1 == self.step:
            with torch.no_grad():
                next(trainer.engine.module.parameters()).view(-1)[0] = float("nan")


class KillWhileSaving(Callback):
    """SIGKILL once this rank's files of the checkpoint of ``step`` are written, the model file truncated."""

    def __init__(self, step: int):
        self.step = step

    def on_checkpoint_written(self, trainer, step, path):
        if step != self.step:
            return
        model_file = path / "mp_rank_00_model_states.pt"
        if model_file.exists():
            with open(model_file, "r+b") as fh:
                fh.truncate(16)
                fh.flush()
                os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


HOOKS = {"signal": SignalAt, "nan": NaNAt, "kill_save": KillWhileSaving}


def _install(spec: str) -> None:
    kind, rank, step = spec.split(":")
    if kind not in HOOKS:
        raise SystemExit(f"unknown hook {spec}")
    if int(os.environ.get("RANK", "0")) == int(rank):
        register(HOOKS[kind](int(step)))


if __name__ == "__main__":
    if os.environ.get("LAKD_TEST_HOOK"):
        _install(os.environ["LAKD_TEST_HOOK"])
    from lakd.cli import main

    sys.exit(main(sys.argv[1:]))
