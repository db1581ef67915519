"""Run `lakd` with test-only fault injection (monkeypatches in this process; production code has no hooks).

    LAKD_TEST_HOOK="signal:<rank>:<step>"  send SIGUSR1 to this process when <rank> starts step <step> (1-based)
    LAKD_TEST_HOOK="kill_save:<rank>:<step>"  SIGKILL <rank> while it writes DeepSpeed's model-states file of
                                              the checkpoint of <step> (a truncated file is left behind)
    LAKD_TEST_HOOK="nan:<rank>:<step>"        make the loss of <rank> NaN at step <step>

    python tests/engine/_hooks.py train --stage teacher --config ...
"""
import os
import signal
import sys


def _install(spec: str) -> None:
    kind, rank, step = spec.split(":")
    rank, step = int(rank), int(step)
    me = int(os.environ.get("RANK", "0"))
    if me != rank:
        return
    from lakd.engine import trainer as T

    if kind == "signal":
        orig = T.Trainer.train_step

        def train_step(self, s):
            if s + 1 == step:
                os.kill(os.getpid(), signal.SIGUSR1)
            return orig(self, s)

        T.Trainer.train_step = train_step
    elif kind == "nan":
        orig = T.Trainer.train_step

        def train_step(self, s):
            values, keys = orig(self, s)
            if s + 1 == step:
                values = values * float("nan")
            return values, keys

        T.Trainer.train_step = train_step
    elif kind == "kill_save":
        import torch

        orig_save = torch.save

        def save(obj, f, *a, **kw):
            name = str(f)
            if name.endswith("mp_rank_00_model_states.pt") and f"step_{step:08d}" in name:
                with open(name, "wb") as fh:
                    fh.write(b"PK\x03\x04 truncated")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            return orig_save(obj, f, *a, **kw)

        torch.save = save
    else:
        raise SystemExit(f"unknown hook {spec}")


if __name__ == "__main__":
    if os.environ.get("LAKD_TEST_HOOK"):
        _install(os.environ["LAKD_TEST_HOOK"])
    from lakd.cli import main

    sys.exit(main(sys.argv[1:]))
