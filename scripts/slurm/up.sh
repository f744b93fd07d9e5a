#!/usr/bin/env bash
# Start a real Slurm cluster (Debian's slurmctld, slurmd and munge) on this host, for tureen's
# Slurm executor tests and for trying `executor: slurm` locally: two nodes, each its own slurmd
# (`slurmd -N NAME`, on its own port), `$(hostname -s)` and `$(hostname -s)-2`. The default
# partition `debug` holds the first node only; the partition `multi` holds both, for jobs of
# two nodes (both on this host: they share its filesystem, as cluster nodes share theirs).
#
# Idempotent: installs the packages only if missing, reuses a running cluster, and keeps all
# of its state in one scratch folder (default /tmp/tureen-slurm, or $TUREEN_SLURM_DIR):
#
#   etc/slurm.conf, etc/gres.conf   configuration (two fake GPUs backed by empty files)
#   munge/                          key, socket, pid and log of our own munged
#   state/ spool/ run/ log/         slurmctld state, slurmd spools, pid files, daemon logs
#   jobcomp.txt                     one line per finished job (JobCompType=jobcomp/filetxt)
#   env                             `export SLURM_CONF=...` etc.; source it to use the cluster
#
# Nothing under /etc is touched except by the package install, and the daemons are stopped
# by scripts/slurm/down.sh through their pid files.
set -euo pipefail

dir=${TUREEN_SLURM_DIR:-/tmp/tureen-slurm}
wait_s=${TUREEN_SLURM_WAIT_S:-60}

log() { printf 'slurm-up: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- packages ---------------------------------------------------------------------------
missing=()
for bin in slurmctld slurmd sbatch munged; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]} and not root: install slurmctld slurmd slurm-client munge"
    log "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
    fi
fi
PATH=$PATH:/usr/sbin:/sbin

# ---- helpers ----------------------------------------------------------------------------
# pid_alive FILE: the pid file exists and names a live process.
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

tail_logs() {
    for f in "$dir"/munge/munged.log "$dir"/log/slurmctld.log "$dir"/log/slurmd-*.log; do
        [ -f "$f" ] || continue
        printf -- '---- last lines of %s ----\n' "$f" >&2
        tail -n 20 "$f" >&2
    done
}

mkdir -p "$dir"
chmod 755 "$dir"
mkdir -p "$dir"/etc "$dir"/state "$dir"/spool "$dir"/run "$dir"/log "$dir"/gpu "$dir"/munge
# munged refuses key and socket directories that others may write to; others may enter it to
# reach the socket (the key itself is mode 400).
chmod 711 "$dir"/munge

conf=$dir/etc/slurm.conf
socket=$dir/munge/munge.socket

# ---- munge ------------------------------------------------------------------------------
if [ ! -s "$dir/munge/munge.key" ]; then
    head -c 1024 /dev/urandom >"$dir/munge/munge.key.tmp"
    chmod 400 "$dir/munge/munge.key.tmp"
    mv "$dir/munge/munge.key.tmp" "$dir/munge/munge.key"
fi
if ! pid_alive "$dir/munge/munged.pid"; then
    log "starting munged"
    rm -f "$socket" "$socket.lock"
    munged --force \
        --socket="$socket" \
        --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" \
        || { tail_logs; die "munged did not start"; }
fi
# munged forks before it listens; the daemons below authenticate through its socket.
for i in $(seq 100); do
    [ -S "$socket" ] && break
    sleep 0.1
done
[ -S "$socket" ] || { tail_logs; die "munged did not create its socket $socket within 10 s"; }

# ---- configuration ----------------------------------------------------------------------
host=$(hostname -s)
host2=$host-2
nodes=("$host" "$host2")
cpus=$(nproc)
mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
# Leave ~10% (at least 512 MiB) for the OS so slurmd never reports less than configured
# (a node whose RealMemory exceeds what it has is drained).
mem_mib=$((mem_kib / 1024))
reserve=$((mem_mib / 10)); [ "$reserve" -ge 512 ] || reserve=512
real_mem=$((mem_mib - reserve))

# Slurm wants a character device per GPU (it indexes GPUs by their device file and derives
# CUDA_VISIBLE_DEVICES from that); links to /dev/null are harmless stand-ins.
for i in 0 1; do
    [ -L "$dir/gpu/gpu$i" ] || { rm -f "$dir/gpu/gpu$i"; ln -s /dev/null "$dir/gpu/gpu$i"; }
done

slurmd_port=${TUREEN_SLURMD_PORT:-6818}
new_conf=$(cat <<EOF
# Written by tureen scripts/slurm/up.sh: a two-node test cluster on $host.
ClusterName=tureen
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldPort=${TUREEN_SLURMCTLD_PORT:-6817}
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
ReturnToService=2
# Short timers: a test cluster should cancel and clean up in seconds.
KillWait=2
MinJobAge=300
InactiveLimit=0
SchedulerType=sched/backfill
GresTypes=gpu
# Both nodes are this host (NodeHostname), told apart by their slurmd's port.
NodeName=$host NodeHostname=$host NodeAddr=127.0.0.1 Port=$slurmd_port CPUs=$cpus RealMemory=$real_mem Gres=gpu:2 State=UNKNOWN
NodeName=$host2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((slurmd_port + 1)) CPUs=$cpus RealMemory=$real_mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=multi Nodes=$host,$host2 MaxTime=INFINITE State=UP
EOF
)
new_gres=$(cat <<EOF
# Two countable GPUs without hardware: links to /dev/null stand in for the device nodes.
AutoDetect=off
Name=gpu File=$dir/gpu/gpu0
Name=gpu File=$dir/gpu/gpu1
EOF
)

changed=0
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$conf.tmp" && mv "$conf.tmp" "$conf"
    changed=1
fi
if [ ! -f "$dir/etc/gres.conf" ] || [ "$(cat "$dir/etc/gres.conf")" != "$new_gres" ]; then
    printf '%s\n' "$new_gres" >"$dir/etc/gres.conf.tmp" && mv "$dir/etc/gres.conf.tmp" "$dir/etc/gres.conf"
    changed=1
fi

cat >"$dir/env.tmp" <<EOF
# Source this file to talk to the tureen test cluster (scripts/slurm/up.sh).
export SLURM_CONF=$conf
export TUREEN_TEST_SLURM_CONF=$conf
export TUREEN_SLURM_DIR=$dir
export PATH="\$PATH:/usr/sbin"
EOF
mv "$dir/env.tmp" "$dir/env"
export SLURM_CONF=$conf

# ---- daemons ----------------------------------------------------------------------------
slurmd_pid() { echo "$dir/run/slurmd-$1.pid"; }
any_slurmd_alive() {
    local n
    for n in "${nodes[@]}"; do pid_alive "$(slurmd_pid "$n")" && return 0; done
    return 1
}
if [ "$changed" = 1 ] && { pid_alive "$dir/run/slurmctld.pid" || any_slurmd_alive; }; then
    log "configuration changed: restarting the daemons"
    "$(dirname "$0")/down.sh" --keep-munge
fi

# start_daemon NAME PIDFILE [ARGS...]: start it unless its pid file names a live process,
# then wait (bounded) for the daemon (which forks) to write its pid file.
start_daemon() {
    local name=$1 pidfile=$2 i
    shift 2
    pid_alive "$pidfile" && return 0
    log "starting $name $*"
    rm -f "$pidfile" # stale, from a daemon that died
    "$name" -f "$conf" "$@" || { tail_logs; die "$name did not start"; }
    for i in $(seq 100); do
        pid_alive "$pidfile" && return 0
        sleep 0.1
    done
    tail_logs
    die "$name exited during start-up (no live pid in $pidfile after 10 s); see logs above, conf $conf"
}
started=0
for n in "${nodes[@]}"; do
    mkdir -p "$dir/spool/$n"
    pid_alive "$(slurmd_pid "$n")" || started=1
done
start_daemon slurmctld "$dir/run/slurmctld.pid"
for n in "${nodes[@]}"; do
    start_daemon slurmd "$(slurmd_pid "$n")" -N "$n"
done

# ---- wait for the nodes -----------------------------------------------------------------
deadline=$((SECONDS + wait_s))
for n in "${nodes[@]}"; do
    state=
    while :; do
        state=$(sinfo -h -N -n "$n" -o '%t' 2>/dev/null | head -n1 || true)
        case "$state" in
            idle | mix | alloc) break ;;
        esac
        pid_alive "$dir/run/slurmctld.pid" || { tail_logs; die "slurmctld exited during start-up; see logs above, conf $conf"; }
        pid_alive "$(slurmd_pid "$n")" || { tail_logs; die "slurmd of $n exited during start-up; see logs above, conf $conf"; }
        if [ $SECONDS -ge $deadline ]; then
            tail_logs
            die "node $n not idle after ${wait_s}s (state: '${state:-unknown}'); see logs above, conf $conf"
        fi
        # A node left down/drained from an earlier run comes back once slurmd registers
        # (ReturnToService=2); nudge it in case the old state is sticky.
        case "$state" in
            down* | drain* | drng*) scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
done
# A restarted controller reports the node states it saved; prove that both slurmd really
# take work by running one trivial step on the two nodes (about a second).
if [ "$started" = 1 ]; then
    if ! out=$(timeout 60 srun --quiet --partition=multi --nodes=2 --ntasks=2 --time=1 --job-name=tureen-slurm-up true 2>&1); then
        tail_logs
        die "a trivial two-node job (srun true) did not run within 60 s: $out"
    fi
fi
log "nodes ${nodes[*]} are up (cluster in $dir; source $dir/env)"
