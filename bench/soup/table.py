#!/usr/bin/env python3
"""Print a benchmark's results (measure.py JSON lines) as a table with ratios to a floor
row, and compare named rows: speed and private memory against a baseline, and peak
private memory against a reference row.

usage: table.py RESULTS FLOOR_LABEL LOAD_BEFORE BASELINE_LABEL TUREEN_LABEL MEMORY_REF_LABEL
"""
import json
import os
import sys

results, floor, load_before, baseline, tureen, mem_ref = sys.argv[1:7]
runs = {}
for line in open(results):
    r = json.loads(line)
    runs.setdefault(r["label"], []).append(r)
rows = {}
for label, rs in runs.items():
    rs = sorted(rs, key=lambda r: r["wall_s"])
    row = dict(rs[len(rs) // 2])  # the median run by wall time
    row["peak"] = max(r["peak_rss_anon_mb"] for r in rs)
    row["all"] = ", ".join(f"{r['wall_s']:.2f}" for r in rs)
    rows[label] = row
base = rows[floor]["wall_s"]
print()
print(f"load average: {load_before} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
print(f"| work | wall s (median) | x {floor} | cpu s | peak RssAnon MB | runs (wall s) |")
print("|---|---:|---:|---:|---:|---|")
for r in rows.values():
    print(f"| {r['label']} | {r['wall_s']:.2f} | {r['wall_s'] / base:.1f} | {r['cpu_s']:.2f} | {r['peak']:.0f} | {r['all']} |")
t, b, m = rows[tureen], rows[baseline], rows[mem_ref]
print()
print(f"{tureen} vs {baseline}: {b['wall_s'] / t['wall_s']:.1f}x faster, "
      f"{b['peak'] / max(t['peak'], 1):.0f}x less private memory")
verdict = "not above" if t["peak"] <= m["peak"] else "ABOVE"
print(f"peak RssAnon of {tureen}: {t['peak']:.0f} MB, {verdict} {mem_ref} ({m['peak']:.0f} MB)")
