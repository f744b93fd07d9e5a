#!/usr/bin/env python3
"""Run a command; print its wall time and peak private memory as one JSON line.

CPU time (user + system, from getrusage) is reported too: on a shared machine it is a
steadier comparison than wall time. Private memory is RssAnon from /proc/PID/status, summed over the process and its
descendants and sampled every 20 ms. Memory-mapped file pages (page cache) are RssFile
and do not count, unlike the RSS that `/usr/bin/time -v` reports.

usage: measure.py LABEL -- COMMAND [ARGS...]
"""
import json
import os
import resource
import subprocess
import sys
import time


def rss_anon_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    label, cmd = sys.argv[1], sys.argv[3:]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(rss_anon_kb(p) for p in descendants(proc.pid)))
        time.sleep(0.02)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"label": label, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                      "peak_rss_anon_mb": round(peak / 1024, 1), "rc": proc.returncode}))
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
