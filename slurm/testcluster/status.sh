#!/usr/bin/env bash
# slurm/testcluster/status.sh - exit 0 (and print mode + nodes) when the test cluster of start.sh is up:
# every daemon it recorded is alive and every node answers idle/mixed/allocated; exit 1 otherwise.
set -uo pipefail
DIR=${LAKD_SLURM_DIR:-/tmp/lakd-slurm}
RUN=$DIR/run
[ -s "$RUN/mode" ] || { echo "test cluster: not started (no $RUN/mode)"; exit 1; }
CONF_DIR=$(cat "$RUN/conf_dir" 2>/dev/null || echo /etc/slurm)
export SLURM_CONF=$CONF_DIR/slurm.conf
for f in "$RUN"/*.mypid; do
  [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null || { echo "test cluster: $(basename "$f" .mypid) is not running"; exit 1; }
done
states=$(sinfo -h -N -o '%N=%T' 2>/dev/null | sort -u | tr '\n' ' ')
[ -n "$states" ] || { echo "test cluster: slurmctld does not answer"; exit 1; }
for s in $states; do
  case ${s#*=} in idle|mixed|allocated|completing) ;; *) echo "test cluster: node ${s%%=*} is ${s#*=}"; exit 1 ;; esac
done
echo "test cluster up: mode $(cat "$RUN/mode"), nodes $states"
