#!/usr/bin/env bash
# Stop the test cluster started by scripts/slurm/up.sh.
#
# Daemons are stopped by the pids in their own pid files (never by process name, so nothing
# else on the machine is touched). `--keep-munge` leaves munged running (used by up.sh when it
# restarts Slurm after a configuration change). The scratch folder is kept, so job logs and
# the jobcomp file can still be read; delete it yourself for a clean slate.
set -euo pipefail

dir=${TUREEN_SLURM_DIR:-/tmp/tureen-slurm}
keep_munge=0
[ "${1:-}" = "--keep-munge" ] && keep_munge=1

log() { printf 'slurm-down: %s\n' "$*" >&2; }

# stop NAME PIDFILE: SIGTERM the pid in PIDFILE, wait up to 10 s, then SIGKILL.
stop() {
    local name=$1 file=$2 pid i
    [ -s "$file" ] || return 0
    pid=$(tr -dc '0-9' <"$file")
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$file"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM for 10 s: sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

for pidfile in "$dir"/run/slurmd-*.pid "$dir/run/slurmd.pid"; do
    stop slurmd "$pidfile"
done
stop slurmctld "$dir/run/slurmctld.pid"
[ "$keep_munge" = 1 ] || stop munged "$dir/munge/munged.pid"
