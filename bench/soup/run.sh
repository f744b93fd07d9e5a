#!/usr/bin/env bash
# Benchmark `tureen soup` against naive_avg.py (torch) and the `cat` floor on three
# convnext_xxlarge-shaped bf16 checkpoints (2.4 GB each), and tureen's BLAKE3 hashing
# against b3sum. Not a test: prints a table. Needs ~20 GB of disk in $BENCH_DATA and ~12 GB
# of RAM (for naive_avg.py).
#
#   bench/soup/run.sh            # generate data if missing, build, measure, print
#   KEEP_DATA=0 bench/soup/run.sh  # also delete the data afterwards
#
# Environment: BENCH_DATA (default /work/bench-data), PYTHON (default .venv/bin/python),
# SHARED_BENCH (default ../shared/bench next to the repo), CARGO_TARGET_DIR, B3SUM (path to
# a b3sum binary, optional; `cargo install b3sum --locked --root DIR` makes one), REPEAT
# (runs per row, default 3: the table shows the run with the median wall time; naive_avg.py
# runs once).
#
# Every timed soup starts from the same state: no old outputs, nothing dirty in the page
# cache (`sync`, so no run pays for the previous run's writeback), inputs in the page cache.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
data=${BENCH_DATA:-/work/bench-data}
py=${PYTHON:-$repo/.venv/bin/python}
shared=${SHARED_BENCH:-$(cd "$repo/.." && pwd)/shared/bench}
target=${CARGO_TARGET_DIR:-$repo/target}
measure="python3 $repo/bench/soup/measure.py"

echo "== building tureen (release)" >&2
(cd "$repo" && cargo build --release --locked --bin tureen >&2)
tureen=$target/release/tureen

mkdir -p "$data/ckpts"
ins=("$data/ckpts/ckpt0.safetensors" "$data/ckpts/ckpt1.safetensors" "$data/ckpts/ckpt2.safetensors")
if [ ! -f "${ins[2]}" ]; then
    echo "== generating 3 convnext_xxlarge-shaped bf16 checkpoints in $data/ckpts" >&2
    "$py" "$shared/gen_ckpts.py" 3 bfloat16 "$data/ckpts" >&2
fi
rm -f "$data"/soup-*.safetensors
store=$data/store
rm -rf "$store"

load_before=$(cut -d' ' -f1 /proc/loadavg)
results=$data/results.jsonl
: > "$results"
repeat=${REPEAT:-3}

# timed N OUTPUT LABEL -- COMMAND...: N measured runs, each after removing OUTPUT (if not
# empty), flushing dirty pages and warming the inputs in the page cache (every contender
# then reads from memory, as the `cat` floor does). The command in the array `after_run`
# runs, untimed, after each run.
after_run=(true)
timed() {
    local n=$1 out=$2 label=$3
    shift 4
    for _ in $(seq "$n"); do
        if [ -n "$out" ]; then rm -f "$out"; fi
        sync
        cat "${ins[@]}" > /dev/null
        $measure "$label" -- "$@" >> "$results"
        "${after_run[@]}"
    done
}

timed "$repeat" "" "cat inputs > /dev/null" -- sh -c "cat ${ins[*]} > /dev/null"
# The other floor of a durable soup: writing a file of the soup's size and fsyncing it.
out_bytes=$(stat -c %s "${ins[0]}")
timed "$repeat" "$data/dd.bin" "dd: write the output size and fsync (no soup)" -- \
    dd if=/dev/zero of="$data/dd.bin" bs=64M count="$out_bytes" iflag=count_bytes conv=fsync status=none
rm -f "$data/dd.bin"
# tureen runs from a directory without a store (`cold`): it hashes the ingredients for the
# provenance metadata, overlapped with the soup. From a directory with a `.tureen` store
# (`warm`) it takes their digests from that store's stat cache (one stat per input), as
# for checkpoints written by a run, hashed by `store hash` or souped before: the usual case
# when trying several weightings. The warm cache is filled once, untimed, by `store hash`.
cold=$data/cold
warm=$data/warm
rm -rf "$cold" "$warm"
mkdir -p "$cold" "$warm"
"$tureen" -q --store "$warm/.tureen" store hash "${ins[@]}" > /dev/null
timed "$repeat" "$data/soup-tureen.safetensors" "tureen soup, first time (hashes the ingredients)" -- \
    env -C "$cold" "$tureen" -q soup "${ins[@]}" -o "$data/soup-tureen.safetensors"
timed "$repeat" "$data/soup-tureen-warm.safetensors" "tureen soup again (ingredient digests from ./.tureen's stat cache)" -- \
    env -C "$warm" "$tureen" -q soup "${ins[@]}" -o "$data/soup-tureen-warm.safetensors"
# `soup --store` also adds the output to the store: a copy of 2.4 GB, hashed while
# copying, on a filesystem without reflinks. gc removes that object after each run
# (untimed).
"$tureen" -q --store "$store" store hash "${ins[@]}" > /dev/null
after_run=("$tureen" -q --store "$store" store gc)
timed "$repeat" "$data/soup-tureen-cached.safetensors" \
    "tureen --store soup (digests from the stat cache; output added to the store)" -- \
    "$tureen" -q --store "$store" soup "${ins[@]}" -o "$data/soup-tureen-cached.safetensors"
after_run=(true)
timed "$repeat" "$data/soup-tureen-nofsync.safetensors" "tureen soup --no-fsync" -- \
    env -C "$cold" "$tureen" -q soup "${ins[@]}" -o "$data/soup-tureen-nofsync.safetensors" --no-fsync
timed "$repeat" "$data/soup-tureen-nometa.safetensors" "tureen soup --no-metadata (no hashing)" -- \
    env -C "$cold" "$tureen" -q soup "${ins[@]}" -o "$data/soup-tureen-nometa.safetensors" --no-metadata
timed "$repeat" "$data/soup-tureen-nofsync.safetensors" "tureen soup --no-fsync --no-metadata" -- \
    env -C "$cold" "$tureen" -q soup "${ins[@]}" -o "$data/soup-tureen-nofsync.safetensors" --no-fsync --no-metadata
rm -f "$data/soup-tureen-nofsync.safetensors" "$data/soup-tureen-cached.safetensors" "$data/soup-tureen-warm.safetensors"
timed 1 "$data/soup-naive.safetensors" "naive_avg.py (torch)" -- \
    "$py" "$shared/naive_avg.py" "$data/soup-naive.safetensors" "${ins[@]}"
timed "$repeat" "" "tureen store hash (1 file)" -- "$tureen" store hash "${ins[0]}"
b3=${B3SUM:-$(command -v b3sum || true)}
if [ -n "$b3" ]; then
    timed "$repeat" "" "b3sum (1 file)" -- "$b3" "${ins[0]}"
fi

# Correctness: tensor bytes identical to naive_avg.py's, and a whole-file match when
# tureen writes no metadata (naive_avg.py writes none).
if cmp "$data/soup-tureen-nometa.safetensors" "$data/soup-naive.safetensors"; then
    identical="yes (cmp: whole file, --no-metadata)"
else
    identical="NO"
fi
data_identical=$("$py" - "$data/soup-tureen.safetensors" "$data/soup-naive.safetensors" <<'PY'
import sys
from safetensors import safe_open
from safetensors.torch import load_file
a = load_file(sys.argv[1])  # must load with PyTorch's loader
b = load_file(sys.argv[2])
same = a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].view(-1).view(dtype=__import__("torch").int16).equal(b[k].view(-1).view(dtype=__import__("torch").int16)) for k in a)
with safe_open(sys.argv[1], "pt") as f:
    meta = f.metadata()
print(f"{'yes' if same else 'NO'} (load_file ok, {len(a)} tensors, format={meta.get('format')})")
PY
)
if [ -n "$b3" ]; then
    b3_hex=$("$b3" "${ins[0]}" | cut -d' ' -f1)
    t_hex=$("$tureen" store hash "${ins[0]}" | cut -d' ' -f1)
    [ "$b3_hex" = "$t_hex" ] && hash_same="yes" || hash_same="NO"
else
    hash_same="(no b3sum)"
fi

"$py" - "$results" <<PY
import json, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["label"], []).append(r)
# Per row, the run with the median wall time (its own cpu), and the largest peak memory.
by = {}
for label, rs in runs.items():
    rs = sorted(rs, key=lambda r: r["wall_s"])
    row = dict(rs[len(rs) // 2])
    row["peak_rss_anon_mb"] = max(r["peak_rss_anon_mb"] for r in rs)
    row["n"] = len(rs)
    row["all"] = ", ".join(f"{r['wall_s']:.2f}" for r in rs)
    by[label] = row
cat = by["cat inputs > /dev/null"]["wall_s"]
print()
import os
print(f"load average: $load_before before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
print("| work | wall s (median) | x cat | cpu s (user+sys) | peak RssAnon MB | runs (wall s) |")
print("|---|---:|---:|---:|---:|---|")
for r in by.values():
    print(f"| {r['label']} | {r['wall_s']:.2f} | {r['wall_s']/cat:.1f} | {r['cpu_s']:.2f} | {r['peak_rss_anon_mb']:.0f} | {r['all']} |")
t, n = by["tureen soup, first time (hashes the ingredients)"], by["naive_avg.py (torch)"]
print()
print(f"tureen soup vs naive_avg.py: {n['wall_s']/t['wall_s']:.1f}x faster, {n['peak_rss_anon_mb']/max(t['peak_rss_anon_mb'],1):.0f}x less private memory")
print(f"bit-identical to naive_avg.py: $identical")
print(f"tensor data identical with provenance metadata, python loads it: $data_identical")
print(f"tureen hash == b3sum: $hash_same")
PY

if [ "${KEEP_DATA:-1}" = 0 ]; then
    rm -rf "$data"
fi
