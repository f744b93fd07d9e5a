#!/usr/bin/env python3
"""Median time of a command: timeit.py [--cpu] RUNS DIR CMD... -> prints milliseconds.

Runs the command RUNS times in DIR (after one untimed warm-up), output discarded;
fails if any run exits non-zero. Wall time by default; with --cpu, the CPU time
(user + system) the command and its children used, which a loaded machine disturbs
less than wall time."""
import os
import statistics
import subprocess
import sys
import time

args = sys.argv[1:]
cpu = args[0] == "--cpu"
if cpu:
    args = args[1:]
runs, cwd, cmd = int(args[0]), args[1], args[2:]


def once():
    before = os.times()
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = os.times()
    used = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return (used if cpu else wall) * 1000


once()
print(f"{statistics.median(once() for _ in range(runs)):.1f}")
