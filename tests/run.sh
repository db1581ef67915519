#!/usr/bin/env bash
# The README's test command runs this: start the Slurm test cluster (when this machine can), run every test,
# stop the cluster again. Tests that need Slurm skip with the reason when it could not be started.
set -uo pipefail
cd "$(dirname "$0")/.."
python -m pytest "$@"
