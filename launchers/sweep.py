#!/usr/bin/env python3
"""Sweep datasets x teacher/student pairs on Slurm (submitit job arrays) or locally.

    python launchers/sweep.py --partition gpu                       # the paper's grid (lakd/sweeps/paper.yaml)
    python launchers/sweep.py --sweep tiny --executor local          # the tiny synthetic sweep, here
    python launchers/sweep.py --sweep my_sweep.yaml --nodes 2 --gpus-per-node 4 --time 24:00:00 --dry-run
    python launchers/sweep.py status | collect [--sweep ...]

See `python launchers/sweep.py --help` and lakd/sweep/__init__.py.
"""
import os
import sys

try:
    import lakd  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from lakd.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
