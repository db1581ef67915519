#!/usr/bin/env bash
# The README's test command runs this (`make test` = `bash tests/run.sh [pytest args]`, venv on PATH):
#   1. start the project's two-node Slurm test cluster (slurm/testcluster/start.sh) when this machine can
#      (root, apt-get or Slurm installed), unless it is up already (then it is used and left up);
#   2. run every test (python -m pytest "$@");
#   3. stop the cluster it started (trap, also on Ctrl-C), and exit with pytest's status.
# When the cluster cannot start, the Slurm tests skip with the reason (exported as LAKD_SLURM_SKIP). In CI
# (CI=true) that is an error instead: the Slurm tests must run there.
# Knobs: LAKD_TEST_SLURM=0 skips the cluster (and the Slurm tests); the LAKD_SLURM_* variables of
# slurm/testcluster/start.sh (e.g. LAKD_SLURM_MODE=loopback).
set -uo pipefail
cd "$(dirname "$0")/.."
cluster=slurm/testcluster
reason=""
started=0

stop_cluster() {
  if [ "$started" = 1 ]; then
    echo "tests/run.sh: stopping the Slurm test cluster"
    bash "$cluster/stop.sh" || echo "tests/run.sh: WARNING: $cluster/stop.sh failed" >&2
    started=0
  fi
}
trap stop_cluster EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "${LAKD_TEST_SLURM:-1}" = 0 ]; then
  reason="disabled by LAKD_TEST_SLURM=0"
elif [ "$(id -u)" != 0 ]; then
  reason="not root: the test cluster installs packages and starts slurmctld/slurmd/munge as root"
elif bash "$cluster/status.sh" >/dev/null 2>&1; then
  echo "tests/run.sh: $(bash "$cluster/status.sh") (already running: used as it is and left up)"
elif ! command -v apt-get >/dev/null 2>&1 && ! command -v slurmctld >/dev/null 2>&1; then
  reason="neither Slurm nor apt-get to install it is available"
else
  echo "tests/run.sh: starting the Slurm test cluster ($cluster/start.sh)"
  started=1   # from here on a partial start is cleaned up by the trap
  if ! bash "$cluster/start.sh"; then
    reason="$cluster/start.sh failed (see its output above)"
    stop_cluster
  fi
fi

if [ -n "$reason" ]; then
  if [ "${CI:-}" = true ]; then
    echo "tests/run.sh: ERROR: the Slurm test cluster is required in CI but could not be started: $reason" >&2
    exit 1
  fi
  echo "tests/run.sh: the Slurm tests will be skipped: $reason"
  export LAKD_SLURM_SKIP="$reason"
fi

python -m pytest "$@"
