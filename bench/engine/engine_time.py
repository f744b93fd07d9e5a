#!/usr/bin/env python3
"""Median of the engine's own time (`engine time: X ms`, logged by `tureen -v run`),
i.e. the no-op run without process start-up: engine_time.py RUNS DIR CMD..."""
import re
import statistics
import subprocess
import sys

runs, cwd, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
values = []
for _ in range(runs + 1):
    out = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    m = re.search(r"engine time: ([0-9.]+) ms", out.stderr)
    if not m:
        sys.exit(f"no engine time in the output of {cmd}:\n{out.stderr[-2000:]}")
    values.append(float(m.group(1)))
print(f"{statistics.median(values[1:]):.1f}")
