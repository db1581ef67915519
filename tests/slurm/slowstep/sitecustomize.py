"""Test helper, active only with LAKD_TEST_STEP_DELAY=<seconds> and this folder on PYTHONPATH: every training
step of lakd.engine.trainer.Trainer sleeps that long first, so that a Slurm test can signal or kill a job
between two checkpoints at a moment it controls. The engine itself runs unchanged."""
import os

_DELAY = float(os.environ.get("LAKD_TEST_STEP_DELAY") or 0)

if _DELAY > 0:
    import importlib.abc
    import importlib.util
    import sys
    import time

    class _SlowSteps(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "lakd.engine.trainer":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run_module = spec.loader.exec_module

            def exec_module(module):
                run_module(module)
                step = module.Trainer.train_step

                def slow_step(self, *args, **kwargs):
                    time.sleep(_DELAY)
                    return step(self, *args, **kwargs)

                module.Trainer.train_step = slow_step

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _SlowSteps())
