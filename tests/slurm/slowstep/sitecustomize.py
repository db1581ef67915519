"""Test helper, active only with LAKD_TEST_STEP_DELAY=<seconds> and this folder on PYTHONPATH: every training
step sleeps that long first (a callback registered with lakd.engine.callbacks.register, so every stage this
process runs has it), so that a Slurm test can signal or kill a job between two checkpoints at a moment it
controls. The engine itself runs unchanged."""
import os

_DELAY = float(os.environ.get("LAKD_TEST_STEP_DELAY") or 0)

if _DELAY > 0:
    import time

    from lakd.engine import callbacks  # torch-free: cheap at interpreter start-up

    class SlowSteps(callbacks.Callback):
        def on_step_start(self, trainer, step: int) -> None:
            time.sleep(_DELAY)

    callbacks.register(SlowSteps())
