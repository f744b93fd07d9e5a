#!/usr/bin/env python3
"""Writes a layered DAG of N command stages to DIR/big.yaml: stage i depends on the
outputs of stages i-1 and i//2 (so the graph is deep and wide at once)."""
import os
import sys

n, out_dir = int(sys.argv[1]), sys.argv[2]
os.makedirs(os.path.join(out_dir, "out"), exist_ok=True)
lines = ["tureen: 1", "stages:"]
for i in range(n):
    deps = sorted({f"out/s{j}.txt" for j in (i - 1, i // 2) if 0 <= j < i})
    lines.append(f"  s{i}:")
    lines.append("    kind: command")
    lines.append(f"    cmd: echo {i} > out/s{i}.txt")
    if deps:
        lines.append(f"    deps: [{', '.join(deps)}]")
    lines.append(f"    outs: [out/s{i}.txt]")
with open(os.path.join(out_dir, "big.yaml"), "w") as f:
    f.write("\n".join(lines) + "\n")
