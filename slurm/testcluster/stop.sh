#!/usr/bin/env bash
# slurm/testcluster/stop.sh - stop the lakd test cluster started by start.sh and undo what it changed:
#   - cancels queued/running jobs, then stops only the PIDs recorded in $LAKD_SLURM_DIR/run/*.mypid
#     (checks /proc/PID/comm against PID reuse; never kills by name)
#   - processes still inside the node namespaces (left-over job steps of this cluster) are stopped by PID
#   - deletes the network namespaces and the bridge (the veths go with them)
#   - removes the /etc/hosts lines marked "# lakd-testcluster"
#   - puts back the slurm.conf/gres.conf/slurmdbd.conf that were there before start.sh
# Idempotent: when nothing is recorded, it does nothing.
set -uo pipefail

DIR=${LAKD_SLURM_DIR:-/tmp/lakd-slurm}
RUN=$DIR/run
MARK='# lakd-testcluster'
T0=$(date +%s%N)
secs_since() { local d=$(( ($(date +%s%N) - $1) / 10000000 )); printf '%d.%02d' $((d / 100)) $((d % 100)); }
log() { printf '[testcluster stop %6ss] %s\n' "$(secs_since "$T0")" "$*"; }

[ "$(id -u)" = 0 ] || { echo "stop.sh must run as root" >&2; exit 1; }
[ -d "$RUN" ] || { log "nothing recorded in $RUN; nothing to do"; exit 0; }

CONF_DIR=$(cat "$RUN/conf_dir" 2>/dev/null || echo /etc/slurm)
export SLURM_CONF=$CONF_DIR/slurm.conf

pid_of() {   # recorded PID, only if alive and still the expected program (guards against PID reuse)
  local f=$RUN/$1.mypid p want=${1%%-*}
  [ -s "$f" ] || return 1
  p=$(cat "$f")
  kill -0 "$p" 2>/dev/null || return 1
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$want" ] || return 1
  echo "$p"
}
wait_gone() {   # wait_gone PID...: up to 10 s, then SIGKILL
  local p left
  for _ in $(seq 1 100); do
    left=""
    for p in "$@"; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  for p in "$@"; do
    if kill -0 "$p" 2>/dev/null; then log "pid $p ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$p" 2>/dev/null; fi
  done
  sleep 0.2
}
stop_group() {   # SIGTERM every named daemon at once, wait, SIGKILL what is left
  local name p pids="" names=""
  for name in "$@"; do
    if p=$(pid_of "$name"); then kill -TERM "$p" 2>/dev/null; pids="$pids $p"; names="$names $name($p)"; fi
  done
  # shellcheck disable=SC2086
  [ -n "$pids" ] && wait_gone $pids
  [ -n "$names" ] && log "stopped$names"
  for name in "$@"; do rm -f "$RUN/$name.mypid"; done
}

if pid_of slurmctld >/dev/null; then
  jobs=$(squeue -h -o '%A' 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    for _ in $(seq 1 150); do
      [ -z "$(squeue -h -t RUNNING,COMPLETING,CONFIGURING,SUSPENDED -o '%A' 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
fi

slurmds=$(cd "$RUN" && ls slurmd-*.mypid 2>/dev/null | sed 's/\.mypid$//' | tr '\n' ' ')
# shellcheck disable=SC2086
stop_group $slurmds slurmctld   # slurmctld saves its state on SIGTERM
stop_group slurmdbd             # after slurmctld: it may still push job records to slurmdbd
stop_group mariadbd munged

# ---------------------------------------------------------------- namespaces + bridge
if [ -s "$RUN/netns" ]; then
  read -r PREFIX NNODES < "$RUN/netns"
  for i in $(seq 1 "$NNODES"); do
    ns=$PREFIX-n$i
    [ -e "/run/netns/$ns" ] || continue
    # anything still in the namespace was started by this cluster's slurmd (job steps): stop it by PID
    left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    if [ -n "${left// /}" ]; then
      log "stopping left-over processes in $ns: $left"
      # shellcheck disable=SC2086
      kill -TERM $left 2>/dev/null; wait_gone $left
    fi
    ip netns del "$ns" && log "deleted netns $ns"
  done
  ip link show "$PREFIX-br0" >/dev/null 2>&1 && ip link del "$PREFIX-br0" && log "deleted bridge $PREFIX-br0"
  rm -f "$RUN/netns"
fi

# ---------------------------------------------------------------- /etc/hosts
if grep -q "$MARK\$" /etc/hosts; then
  kept=$(grep -v "$MARK\$" /etc/hosts)
  printf '%s\n' "$kept" > /etc/hosts   # in place (keeps the inode)
  log "removed the node names from /etc/hosts"
fi
rm -f "$RUN/hosts" "$DIR/hosts.before"

# ---------------------------------------------------------------- config files
if [ -d "$DIR/conf-saved" ]; then
  for f in slurm.conf gres.conf slurmdbd.conf; do
    if [ -e "$DIR/conf-saved/$f" ]; then
      cp -p "$DIR/conf-saved/$f" "$CONF_DIR/$f" && rm -f "$DIR/conf-saved/$f"
    elif [ -e "$DIR/conf-saved/$f.absent" ]; then
      rm -f "$CONF_DIR/$f" "$DIR/conf-saved/$f.absent"
    fi
  done
  rmdir "$DIR/conf-saved" 2>/dev/null
  log "restored the previous files in $CONF_DIR"
fi
rm -f "$RUN/mode" "$RUN/conf_dir"
log "done"
