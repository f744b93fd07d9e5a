#!/usr/bin/env python3
"""Median times of one or more commands, measured in turns:

    timeit.py [--cpu | --engine] RUNS GROUP [:: GROUP ...]
    GROUP = DIR [NAME=VALUE ...] CMD...

Runs each group's command RUNS times in its DIR, with NAME=VALUE added to the
environment, output discarded, after one untimed warm-up of each; fails if any run exits
non-zero. Prints one median in milliseconds per group, in the order given.

The groups take turns (a, b, b, a, a, b, ...), so that a machine getting slower or faster
during the measurement shifts every group alike: compare the groups of one call, never
the figures of two calls.

What is measured: wall time by default; with --cpu, the CPU time (user + system) the
command and its children used, which a loaded machine disturbs less than wall time; with
--engine, the engine's own time that `tureen -v run` logs (`engine time: X ms`), i.e.
without process start-up.
"""
import os
import re
import statistics
import subprocess
import sys
import time

args = sys.argv[1:]
mode = "wall"
if args[0] in ("--cpu", "--engine"):
    mode, args = args[0][2:], args[1:]
runs = int(args[0])


def parse_groups(tokens):
    groups, current = [], []
    for t in tokens + ["::"]:
        if t != "::":
            current.append(t)
            continue
        cwd, rest = current[0], current[1:]
        env = dict(os.environ)
        while rest and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", rest[0]):
            name, value = rest.pop(0).split("=", 1)
            env[name] = value
        groups.append((cwd, env, rest))
        current = []
    return groups


def once(cwd, env, cmd):
    before = os.times()
    t = time.perf_counter()
    out = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if mode == "engine" else subprocess.DEVNULL,
        text=True,
    )
    wall = time.perf_counter() - t
    after = os.times()
    if mode == "engine":
        m = re.search(r"engine time: ([0-9.]+) ms", out.stderr)
        if not m:
            sys.exit(f"no engine time in the output of {cmd}:\n{out.stderr[-2000:]}")
        return float(m.group(1))
    if mode == "cpu":
        return ((after.children_user - before.children_user)
                + (after.children_system - before.children_system)) * 1000
    return wall * 1000


groups = parse_groups(args[1:])
for g in groups:
    once(*g)
times = [[] for _ in groups]
for r in range(runs):
    order = list(range(len(groups)))
    if r % 2:
        order.reverse()
    for i in order:
        times[i].append(once(*groups[i]))
print(" ".join(f"{statistics.median(t):.1f}" for t in times))
