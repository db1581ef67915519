#!/usr/bin/env bash
# The one command for the day a GPU is lent: every lakd GPU measurement in about 8 minutes on one H100/H200.
# Run from anywhere, in an environment where lakd is installed with a CUDA build of torch and triton
# (pip install -e '.[test]'). Writes benchmarks/results/gpu/gpu.json and gpu.md (extra args go to gpu.py).
set -euo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET  # the kernels must be compiled for the GPU, not interpreted
exec python benchmarks/gpu.py "$@"
