#!/usr/bin/env bash
# slurm/testcluster/start.sh - a real multi-node Slurm cluster (default: 2 nodes, n1 and n2) on this one machine,
# for lakd's tests (`make test` starts it through tests/run.sh and stops it again). Needs root and apt (Debian/Ubuntu
# packages of Slurm, munge and, for accounting, slurmdbd + MariaDB); adapted from scripts proven on Debian 12 with
# Slurm 22.05.
#
# One slurmd per node (Debian builds Slurm with MULTIPLE_SLURMD):
#   mode netns    (default when the kernel allows it): each node gets its own network namespace with its own
#                 IP (SUBNET.11, .12, ...) behind a bridge whose address (SUBNET.1) is the controller's, and its
#                 own UTS namespace, so `hostname` prints n1 / n2 inside jobs and each node resolves to its own IP
#                 (gloo advertises the address its hostname resolves to).
#   mode loopback: every slurmd listens on 127.0.0.1 with its own port (17001, 17002, ...); nodes still get
#                 their own hostname (UTS namespace), but all share the network stack and 127.0.0.1.
# slurmctld (and slurmdbd/MariaDB with accounting) run in the root namespace and are reached at the controller's
# address (the bridge's in netns mode), so clients inside jobs (sacct, scontrol) reach them too. Nothing is ever routed off
# this machine: the namespaces have no default route and the subnet exists only on the local bridge.
# Partitions: gpu (default) and cpu, each with all nodes; urgent (higher tier: its jobs preempt, i.e. requeue,
# jobs of gpu and cpu after a 30 s grace time); fake GPUs through GRES (char devices like /dev/null).
#
# Idempotent: a no-op when the cluster is already up; a partial one is stopped and started afresh.
# Every PID started is recorded in $DIR/run/*.mypid; stop.sh stops exactly those (never by name),
# deletes the namespaces/bridge, removes the /etc/hosts lines (marked "# lakd-testcluster") and restores the
# slurm config files it replaced. status.sh tells whether the cluster is up.
#
# Knobs (environment):
#   LAKD_SLURM_DIR=/tmp/lakd-slurm     state, logs, pid files, fake GPU device nodes, MariaDB datadir
#   LAKD_SLURM_MODE=auto               netns | loopback | auto (netns if namespaces can be made, else loopback)
#   LAKD_SLURM_NODES=2                 number of nodes (n1..nN); 2..9
#   LAKD_SLURM_SUBNET=10.99.7          /24 prefix used in netns mode (controller .1, node i at .1i);
#                                      must not be in use on this machine (checked; auto mode then uses loopback)
#   LAKD_SLURM_ACCOUNTING=1            1: slurmdbd + private MariaDB so sacct works (submitit needs it to see
#                                      job states and jobs that died); 0: accounting_storage/none
#   LAKD_SLURM_GPUS=2                  fake GPUs per node (GRES backed by /dev/null-like char devices); 0: none
#   LAKD_SLURM_CPUS=                   advertise this many CPUs per node instead of the real count
#   LAKD_SLURM_CONF_DIR=/etc/slurm     where slurm.conf/gres.conf/slurmdbd.conf go; the files there are saved
#                                      and put back by stop.sh. Another dir needs SLURM_CONF=DIR/slurm.conf
#                                      in the environment of every client (sbatch, srun, submitit).
#   LAKD_SLURM_KEEP_STATE=0            1: keep job state + accounting DB of the previous run
#   LAKD_SLURM_TIMEOUT=60              seconds to wait for each daemon
set -euo pipefail

DIR=${LAKD_SLURM_DIR:-/tmp/lakd-slurm}
MODE=${LAKD_SLURM_MODE:-auto}
NNODES=${LAKD_SLURM_NODES:-2}
SUBNET=${LAKD_SLURM_SUBNET:-10.99.7}
ACCOUNTING=${LAKD_SLURM_ACCOUNTING:-1}
NGPUS=${LAKD_SLURM_GPUS:-2}
VCPUS=${LAKD_SLURM_CPUS:-}
CONF_DIR=${LAKD_SLURM_CONF_DIR:-/etc/slurm}
KEEP_STATE=${LAKD_SLURM_KEEP_STATE:-0}
TIMEOUT=${LAKD_SLURM_TIMEOUT:-60}
RUN=$DIR/run
LOG=$DIR/log
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=lkd                  # names of namespaces (lkd-n1), bridge (lkd-br0), root-side veths (lkd-v1)
MARK='# lakd-testcluster'        # marks our /etc/hosts lines
CTLD_NAME=$(hostname -s)
T_START=$(date +%s%N)
export SLURM_CONF=$CONF_DIR/slurm.conf

secs_since() { local d=$(( ($(date +%s%N) - $1) / 10000000 )); printf '%d.%02d' $((d / 100)) $((d % 100)); }
log() { printf '[testcluster start %6ss] %s\n' "$(secs_since "$T_START")" "$*"; }
fail() { log "ERROR: $*"; exit 1; }   # before anything was started
die() { log "ERROR: $*"; for f in "$LOG"/*.log "$LOG"/*.stderr; do [ -s "$f" ] && { echo "--- tail $f"; tail -n 15 "$f"; }; done; exit 1; }
alive() { [ -s "$RUN/$1.mypid" ] && kill -0 "$(cat "$RUN/$1.mypid")" 2>/dev/null; }
wait_for() {   # wait_for DESCRIPTION COMMAND...: poll every 0.1 s until COMMAND succeeds or TIMEOUT
  local what=$1; shift
  local deadline=$(( $(date +%s) + TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.1
  done
}
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
NODES=""; for i in $(seq 1 "$NNODES"); do NODES="$NODES n$i"; done
NODES=${NODES# }
nodes_ready() {   # every node idle/mixed/allocated
  local states
  states=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u) || return 1
  for n in $NODES; do grep -qE "^$n (idle|mixed|allocated)$" <<<"$states" || return 1; done
}

[ "$(id -u)" = 0 ] || { echo "slurm/testcluster/start.sh must run as root" >&2; exit 1; }
[[ "$NNODES" =~ ^[2-9]$ ]] || { echo "LAKD_SLURM_NODES must be 2..9" >&2; exit 1; }
[[ "$SUBNET" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "LAKD_SLURM_SUBNET must look like 10.99.7" >&2; exit 1; }

# ---------------------------------------------------------------- already running?
DAEMONS="slurmctld"; for n in $NODES; do DAEMONS="$DAEMONS slurmd-$n"; done
[ "$ACCOUNTING" = 1 ] && DAEMONS="mariadbd slurmdbd $DAEMONS"
if [ -d "$RUN" ]; then
  all_up=1
  for d in $DAEMONS; do alive "$d" || all_up=0; done
  if [ "$all_up" = 1 ] && nodes_ready; then
    log "cluster already running (mode $(cat "$RUN/mode" 2>/dev/null), nodes $NODES up); nothing to do"
    sinfo -N -o '%N %P %T %c %G %o'; exit 0
  fi
  if compgen -G "$RUN/*.mypid" >/dev/null || [ -e "$RUN/netns" ] || [ -e "$RUN/hosts" ] || [ -e "$RUN/conf_dir" ]; then
    log "partial/stale cluster found: stopping it first"
    LAKD_SLURM_DIR=$DIR bash "$HERE/stop.sh"
  fi
fi

# another Slurm on this machine (a test cluster of ../shared, a real one) uses the same ports and config files
for port in 6817 6819; do
  tcp_open 127.0.0.1 $port && fail "something already listens on 127.0.0.1:$port (another slurmctld/slurmdbd?)"
done

# ---------------------------------------------------------------- install (only what is missing)
PKGS="munge slurmctld slurmd slurm-client iproute2"
[ "$ACCOUNTING" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null || fail "packages missing (${missing# }) and no apt-get to install them"
  log "installing:$missing"
  t0=$(date +%s%N)
  own_policy=0   # keep package postinst scripts from starting services with the stock config
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1; fi
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p "$(dirname "$DIR")"
  apt-get update -qq >"$DIR.apt.log" 2>&1 || { cat "$DIR.apt.log"; exit 1; }
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >>"$DIR.apt.log" 2>&1 || { tail -n 30 "$DIR.apt.log"; exit 1; }
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  log "installed in $(secs_since "$t0") s"
fi
command -v nsenter >/dev/null && command -v unshare >/dev/null || die "nsenter/unshare (util-linux) missing"
log "slurm $(dpkg-query -W -f='${Version}' slurmctld), munge $(dpkg-query -W -f='${Version}' munge)"

# ---------------------------------------------------------------- layout
if [ "$KEEP_STATE" != 1 ]; then rm -rf "$DIR/spool" "$DIR/mysql" "$LOG"; fi
mkdir -p "$DIR/spool/ctld" "$RUN" "$LOG" "$DIR/fakedev" "$CONF_DIR" "$DIR/conf-saved"
for n in $NODES; do mkdir -p "$DIR/spool/$n"; done
chmod 755 "$DIR" "$RUN"

# ---------------------------------------------------------------- network
ns_of() { echo "$PREFIX-$1"; }       # n1 -> lkd-n1
addr_of() { echo "$SUBNET.1${1#n}"; } # n1 -> 10.99.7.11
netns_setup() {
  local i n ns
  # the subnet must be free: no address or route of it anywhere in the root namespace
  if ip -4 -o addr show | grep -q " $SUBNET\." || ip -4 route show | grep -q "^$SUBNET\."; then
    log "subnet $SUBNET.0/24 already in use on this machine"; return 1
  fi
  echo "$PREFIX $NNODES" > "$RUN/netns"   # recorded before creating anything, so stop can clean a partial setup
  ip link add "$PREFIX-br0" type bridge || return 1
  ip addr add "$SUBNET.1/24" dev "$PREFIX-br0" || return 1
  ip link set "$PREFIX-br0" up || return 1
  for i in $(seq 1 "$NNODES"); do
    n=n$i; ns=$(ns_of $n)
    ip netns add "$ns" || return 1
    ip link add "$PREFIX-v$i" type veth peer name eth0 netns "$ns" || return 1
    ip link set "$PREFIX-v$i" master "$PREFIX-br0" up || return 1
    ip -n "$ns" addr add "$(addr_of $n)/24" dev eth0 || return 1
    ip -n "$ns" link set lo up || return 1
    ip -n "$ns" link set eth0 up || return 1
    # no default route inside: nothing from a node can leave this machine
  done
}
netns_teardown() {
  local i
  for i in $(seq 1 "$NNODES"); do ip netns del "$PREFIX-n$i" 2>/dev/null || true; done
  ip link del "$PREFIX-br0" 2>/dev/null || true
  rm -f "$RUN/netns"
}
if [ "$MODE" = auto ] || [ "$MODE" = netns ]; then
  if netns_setup 2>"$LOG/netns.err"; then
    MODE=netns
  else
    netns_teardown
    [ "$MODE" = netns ] && { cat "$LOG/netns.err"; die "could not create network namespaces"; }
    log "netns mode not possible ($(head -c 200 "$LOG/netns.err" | tr '\n' ' ')); using loopback mode"
    MODE=loopback
  fi
elif [ "$MODE" != loopback ]; then
  die "LAKD_SLURM_MODE must be netns, loopback or auto"
fi
echo "$MODE" > "$RUN/mode"
if [ "$MODE" = netns ]; then
  CTLD_ADDR=$SUBNET.1
  log "netns: bridge $PREFIX-br0 $CTLD_ADDR/24; $(for n in $NODES; do printf '%s=%s(%s) ' $n "$(ns_of $n)" "$(addr_of $n)"; done)"
else
  CTLD_ADDR=127.0.0.1
fi

# /etc/hosts: node names must resolve everywhere (MASTER_ADDR=$(scontrol show hostnames ... | head -1))
echo "$MARK" > "$RUN/hosts"
[ -f "$DIR/hosts.before" ] || cp -p /etc/hosts "$DIR/hosts.before"
hosts_new=$(grep -v "$MARK\$" /etc/hosts || true)
for n in $NODES; do
  if [ "$MODE" = netns ]; then hosts_new+=$'\n'"$(addr_of $n) $n $MARK"; else hosts_new+=$'\n'"127.0.0.1 $n $MARK"; fi
done
printf '%s\n' "$hosts_new" > /etc/hosts   # rewrite in place (keeps the inode: /etc/hosts may be a bind mount)

# ---------------------------------------------------------------- node description
HW=$(slurmd -C -f /dev/null 2>/dev/null | head -n 1)
[[ "$HW" == NodeName=* ]] || die "slurmd -C failed: $HW"
HW=${HW#NodeName=* }
REALMEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
if [ -n "$VCPUS" ]; then
  NODE_HW="CPUs=$VCPUS RealMemory=$REALMEM"; SLURMD_PARAMS="SlurmdParameters=config_overrides"
else
  NODE_HW=$HW; SLURMD_PARAMS="#SlurmdParameters="
fi
GRES_NODE=""; GRES_TYPES="#GresTypes="
if [ "$NGPUS" -gt 0 ]; then
  GRES_TYPES="GresTypes=gpu"; GRES_NODE="Gres=gpu:$NGPUS"
  rm -f "$DIR"/fakedev/nvidia*
  for i in $(seq 0 $((NGPUS - 1))); do
    mknod "$DIR/fakedev/nvidia$i" c 1 3 2>/dev/null || touch "$DIR/fakedev/nvidia$i"
  done
fi
NODE_LINES=""
for n in $NODES; do
  if [ "$MODE" = netns ]; then
    NODE_LINES+="NodeName=$n NodeAddr=$(addr_of $n) $NODE_HW $GRES_NODE State=UNKNOWN"$'\n'
  else
    NODE_LINES+="NodeName=$n NodeHostname=$n NodeAddr=127.0.0.1 Port=$((17000 + ${n#n})) $NODE_HW $GRES_NODE State=UNKNOWN"$'\n'
  fi
done

# ---------------------------------------------------------------- config (save what was there; stop puts it back)
for f in slurm.conf gres.conf slurmdbd.conf; do
  if [ ! -e "$DIR/conf-saved/$f" ] && [ ! -e "$DIR/conf-saved/$f.absent" ]; then
    if [ -e "$CONF_DIR/$f" ]; then cp -p "$CONF_DIR/$f" "$DIR/conf-saved/$f"; else touch "$DIR/conf-saved/$f.absent"; fi
  fi
done
echo "$CONF_DIR" > "$RUN/conf_dir"
if [ "$ACCOUNTING" = 1 ]; then
  # the controller's address, not 127.0.0.1: inside a node's network namespace 127.0.0.1 is the node itself, and
  # sacct run by a job (lakd.sweep.requeue asks accounting which node an attempt lost) must reach slurmdbd
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$CTLD_ADDR
AccountingStoragePort=6819"
else
  ACCT="AccountingStorageType=accounting_storage/none"
fi
cat > "$CONF_DIR/slurm.conf" <<EOF
# generated by slurm/testcluster/start.sh (lakd) - $NNODES-node test cluster on one machine (mode $MODE), do not use in production
ClusterName=lakdtest
SlurmctldHost=$CTLD_NAME($CTLD_ADDR)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/spool/ctld
# one slurmd per node on this machine: %n = node name
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$ACCT
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MailProg=/bin/true
$SLURMD_PARAMS
AuthInfo=cred_expire=5
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1,sched_min_interval=0
# preemption as many sites run it: a job in partition urgent (higher tier) requeues jobs of gpu/cpu, which get
# SIGTERM first and GraceTime seconds to checkpoint
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
MinJobAge=300
KillWait=5
CompleteWait=0
InactiveLimit=0
MessageTimeout=10
$GRES_TYPES
${NODE_LINES}PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=cpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=urgent Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
if [ "$NGPUS" -gt 0 ]; then
  cat > "$CONF_DIR/gres.conf" <<EOF
# generated by slurm/testcluster/start.sh (lakd) - fake GPUs (gres/gpu drops GPUs that have no File=); every node sees the same files
AutoDetect=off
Name=gpu File=$DIR/fakedev/nvidia[0-$((NGPUS - 1))]
EOF
else
  rm -f "$CONF_DIR/gres.conf"
fi
if [ "$ACCOUNTING" = 1 ]; then
  cat > "$CONF_DIR/slurmdbd.conf" <<EOF
# generated by slurm/testcluster/start.sh (lakd)
AuthType=auth/munge
DbdHost=localhost
DbdAddr=$CTLD_ADDR
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
EOF
  chmod 600 "$CONF_DIR/slurmdbd.conf"
else
  rm -f "$CONF_DIR/slurmdbd.conf"
fi
cp "$CONF_DIR/slurm.conf" "$DIR/slurm.conf.last"

cd /   # daemons must not keep the caller's cwd busy

# ---------------------------------------------------------------- munge (a unix socket: reachable from every netns)
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 755 /run/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already answering (not started by this script; left alone)"
else
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  wait_for "munged" bash -c 'munge -n | unmunge'
  cp /run/munge/munged.pid "$RUN/munged.mypid"
  log "munged up (pid $(cat "$RUN/munged.mypid"))"
fi

# ---------------------------------------------------------------- MariaDB + slurmdbd
if [ "$ACCOUNTING" = 1 ]; then
  MYRUN=$DIR/mysqlrun
  mkdir -p "$MYRUN"; chown mysql:mysql "$MYRUN"
  touch "$LOG/mariadb.log"; chown mysql:mysql "$LOG/mariadb.log"
  MYOPTS="--innodb-buffer-pool-size=2G --innodb-log-file-size=64M --innodb-lock-wait-timeout=900"
  if [ ! -d "$DIR/mysql/mysql" ]; then
    mkdir -p "$DIR/mysql"; chown mysql:mysql "$DIR/mysql"
    # shellcheck disable=SC2086
    mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql" \
      --auth-root-authentication-method=socket --skip-test-db $MYOPTS >"$LOG/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed"
  fi
  # shellcheck disable=SC2086
  setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql" \
    --socket="$MYRUN/mysqld.sock" --pid-file="$MYRUN/mariadbd.pid" --skip-networking \
    $MYOPTS --log-error="$LOG/mariadb.log" </dev/null >/dev/null 2>&1 &
  echo $! > "$RUN/mariadbd.mypid"
  wait_for "mariadbd" mariadb-admin --no-defaults --socket="$MYRUN/mysqld.sock" ping
  log "mariadbd up (pid $(cat "$RUN/mariadbd.mypid"))"
  MYSQL_UNIX_PORT=$MYRUN/mysqld.sock setsid /usr/sbin/slurmdbd -D </dev/null >"$LOG/slurmdbd.stderr" 2>&1 &
  echo $! > "$RUN/slurmdbd.mypid"
  wait_for "slurmdbd (port 6819)" tcp_open "$CTLD_ADDR" 6819
  log "slurmdbd up (pid $(cat "$RUN/slurmdbd.mypid"))"
fi

# ---------------------------------------------------------------- slurmctld (root namespace)
setsid /usr/sbin/slurmctld -D </dev/null >"$LOG/slurmctld.stderr" 2>&1 &
echo $! > "$RUN/slurmctld.mypid"
wait_for "slurmctld" ctld_up
log "slurmctld up (pid $(cat "$RUN/slurmctld.mypid")) at $CTLD_ADDR:6817"

# ---------------------------------------------------------------- one slurmd per node
# nsenter --net (NOT `ip netns exec`: that remounts /sys, which hides /sys/fs/cgroup, and slurmd then dies with
# "No filesystem mounted on /sys/fs/cgroup"). unshare --uts gives the node its own hostname, so that code which
# resolves its own hostname (gloo, MPI, ...) gets the node's address and not 127.0.0.1. All of these exec, so $!
# is slurmd's PID.
for n in $NODES; do
  if [ "$MODE" = netns ]; then
    setsid nsenter --net="/run/netns/$(ns_of $n)" unshare --uts \
      sh -c "hostname $n && exec /usr/sbin/slurmd -D -N $n" </dev/null >"$LOG/slurmd-$n.stderr" 2>&1 &
  else
    setsid unshare --uts sh -c "hostname $n && exec /usr/sbin/slurmd -D -N $n" </dev/null >"$LOG/slurmd-$n.stderr" 2>&1 &
  fi
  echo $! > "$RUN/slurmd-$n.mypid"
done
wait_for "nodes $NODES to be idle" nodes_ready
for n in $NODES; do
  p=$(cat "$RUN/slurmd-$n.mypid")
  if [ "$(cat "/proc/$p/comm" 2>/dev/null)" != slurmd ]; then   # setsid forked (caller ran us as a group leader)
    [ -s "$RUN/slurmd-$n.pid" ] && cp "$RUN/slurmd-$n.pid" "$RUN/slurmd-$n.mypid"
  fi
done
log "slurmd up: $(for n in $NODES; do printf '%s(pid %s) ' $n "$(cat "$RUN/slurmd-$n.mypid")"; done)"

if [ "$ACCOUNTING" = 1 ]; then
  if [ "$MODE" = netns ]; then   # what a job's sacct needs: slurmdbd reachable from inside every node
    for n in $NODES; do
      nsenter --net="/run/netns/$(ns_of $n)" bash -c "exec 3<>/dev/tcp/$CTLD_ADDR/6819" 2>/dev/null \
        || die "slurmdbd ($CTLD_ADDR:6819) is not reachable from node $n"
    done
  fi
  wait_for "cluster registered in slurmdbd" bash -c 'sacctmgr -n -P show cluster format=cluster | grep -qx lakdtest'
fi
sinfo -N -o '%N %P %T %c %G %o'
[ "$CONF_DIR" = /etc/slurm ] || log "clients need: export SLURM_CONF=$CONF_DIR/slurm.conf"
log "cluster ready (mode $MODE, $NNODES nodes)"
