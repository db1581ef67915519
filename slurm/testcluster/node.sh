#!/usr/bin/env bash
# slurm/testcluster/node.sh - make one node of the test cluster (start.sh) die, and bring it back; for the
# node-failure tests (tests/slurm/test_node_failure.py). As root.
#
#   node.sh kill NODE    SIGKILL the node's slurmd and every process of that node (its job steps: slurmstepd and
#                        the tasks), as a power loss would; the node's namespaces and config stay. Slurm notices
#                        after SlurmdTimeout (a test may mark it DOWN at once: scontrol update ... State=DOWN).
#   node.sh start NODE   start the node's slurmd again exactly as start.sh does, record its PID (status.sh and
#                        stop.sh use it), and wait until the node is back in service (resumed if it stays DOWN).
#                        A no-op when its slurmd runs.
#
# The processes of a node are those in its UTS namespace (start.sh gives each slurmd its own), in both modes.
set -euo pipefail
DIR=${LAKD_SLURM_DIR:-/tmp/lakd-slurm}
RUN=$DIR/run
LOG=$DIR/log
TIMEOUT=${LAKD_SLURM_TIMEOUT:-60}
PREFIX=lkd   # as start.sh
CONF_DIR=$(cat "$RUN/conf_dir" 2>/dev/null || echo /etc/slurm)
export SLURM_CONF=$CONF_DIR/slurm.conf

usage() { echo "usage: node.sh kill|start NODE" >&2; exit 2; }
[ $# = 2 ] || usage
action=$1 node=$2
[[ "$node" =~ ^n[1-9]$ ]] || { echo "node.sh: no node $node (n1..n9)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "node.sh must run as root" >&2; exit 1; }
[ -s "$RUN/mode" ] || { echo "node.sh: the test cluster is not started (no $RUN/mode)" >&2; exit 1; }
MODE=$(cat "$RUN/mode")
pidfile=$RUN/slurmd-$node.mypid

slurmd_pid() {   # the recorded PID while it is still this node's slurmd
  local p
  [ -s "$pidfile" ] || return 1
  p=$(cat "$pidfile")
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = slurmd ] || return 1
  echo "$p"
}
node_state() { sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n 1; }

case $action in
kill)
  p=$(slurmd_pid) || { echo "node.sh: slurmd of $node is not running" >&2; exit 1; }
  uts=$(readlink "/proc/$p/ns/uts")
  [ "$uts" != "$(readlink /proc/1/ns/uts)" ] || { echo "node.sh: $node has no UTS namespace of its own" >&2; exit 1; }
  victims=""
  for d in /proc/[0-9]*; do
    [ "$(readlink "$d/ns/uts" 2>/dev/null)" = "$uts" ] && victims="$victims ${d#/proc/}"
  done
  # shellcheck disable=SC2086
  kill -KILL $victims 2>/dev/null || true
  for _ in $(seq 1 100); do
    left=""; for v in $victims; do kill -0 "$v" 2>/dev/null && left="$left $v"; done
    [ -z "$left" ] && break
    sleep 0.05
  done
  echo "node.sh: killed $node (slurmd and$(( $(wc -w <<<"$victims") - 1 )) other process(es))"
  ;;
start)
  if ! slurmd_pid >/dev/null; then
    cd /
    if [ "$MODE" = netns ]; then
      setsid nsenter --net="/run/netns/$PREFIX-$node" unshare --uts \
        sh -c "hostname $node && exec /usr/sbin/slurmd -D -N $node" </dev/null >>"$LOG/slurmd-$node.stderr" 2>&1 &
    else
      setsid unshare --uts sh -c "hostname $node && exec /usr/sbin/slurmd -D -N $node" \
        </dev/null >>"$LOG/slurmd-$node.stderr" 2>&1 &
    fi
    echo $! > "$pidfile"
  fi
  deadline=$(( $(date +%s) + TIMEOUT ))
  resumed=0
  while :; do
    st=$(node_state)
    case $st in idle|mixed|allocated|completing) break ;; esac
    # a node set DOWN by hand: ReturnToService=2 brings it back when slurmd registers; resume it if not
    alive=$(cat "/proc/$(cat "$pidfile")/comm" 2>/dev/null || true)
    if [ "$resumed" = 0 ] && [[ "$st" == down* ]] && [ "$alive" = slurmd ]; then
      sleep 2; st=$(node_state)
      case $st in idle|mixed|allocated|completing) break ;; esac
      scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
      resumed=1
    fi
    [ "$(date +%s)" -lt "$deadline" ] || { echo "node.sh: $node is still '$st' after ${TIMEOUT}s" >&2; exit 1; }
    sleep 0.2
  done
  p=$(cat "$pidfile")
  if [ "$(cat "/proc/$p/comm" 2>/dev/null)" != slurmd ] && [ -s "$RUN/slurmd-$node.pid" ]; then
    cp "$RUN/slurmd-$node.pid" "$pidfile"   # setsid forked (caller was a process-group leader)
  fi
  echo "node.sh: $node is back ($(node_state), slurmd pid $(cat "$pidfile"))"
  ;;
*) usage ;;
esac
