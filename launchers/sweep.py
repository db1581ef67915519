#!/usr/bin/env python3
"""`lakd sweep` from a checkout without `pip install`: the same command line (lakd.sweep.cli).

    python launchers/sweep.py --partition gpu                       # = lakd sweep --partition gpu
    python launchers/sweep.py --sweep tiny --executor local
    python launchers/sweep.py status | collect | script [--sweep ...]
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
