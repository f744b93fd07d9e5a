#!/usr/bin/env python3
"""Median wall time of a command: timeit.py RUNS DIR CMD... -> prints milliseconds.

Runs the command RUNS times in DIR (after one untimed warm-up), output discarded;
fails if any run exits non-zero."""
import statistics
import subprocess
import sys
import time

runs, cwd, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
times = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(times):.1f}")
