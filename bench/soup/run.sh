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
# a b3sum binary, optional).
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

load_before=$(cut -d' ' -f1 /proc/loadavg)
results=$data/results.jsonl
: > "$results"
# Warm the page cache so every contender reads from memory, as the `cat` floor does.
cat "${ins[@]}" > /dev/null
$measure "cat inputs > /dev/null" -- sh -c "cat ${ins[*]} > /dev/null" >> "$results"
$measure "tureen soup" -- "$tureen" -q soup "${ins[@]}" -o "$data/soup-tureen.safetensors" >> "$results"
$measure "tureen soup --no-fsync" -- "$tureen" -q soup "${ins[@]}" -o "$data/soup-tureen-nofsync.safetensors" --no-fsync >> "$results"
$measure "tureen soup --no-fsync --no-metadata (no hashing)" -- "$tureen" -q soup "${ins[@]}" -o "$data/soup-tureen-nofsync.safetensors" --no-fsync --no-metadata >> "$results"
$measure "naive_avg.py (torch)" -- "$py" "$shared/naive_avg.py" "$data/soup-naive.safetensors" "${ins[@]}" >> "$results"
$measure "tureen store hash (1 file)" -- "$tureen" store hash "${ins[0]}" >> "$results"
b3=${B3SUM:-$(command -v b3sum || true)}
if [ -n "$b3" ]; then
    $measure "b3sum (1 file)" -- "$b3" "${ins[0]}" >> "$results"
fi

# Correctness: tensor bytes identical to naive_avg.py's, and a whole-file match when
# tureen writes no metadata (naive_avg.py writes none).
"$tureen" -q soup "${ins[@]}" -o "$data/soup-tureen-nometa.safetensors" --no-metadata
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
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {r["label"]: r for r in rows}
cat = by["cat inputs > /dev/null"]["wall_s"]
print()
import os
print(f"load average: $load_before before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
print("| work | wall s | x cat | cpu s (user+sys) | peak RssAnon MB |")
print("|---|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['label']} | {r['wall_s']:.2f} | {r['wall_s']/cat:.1f} | {r['cpu_s']:.2f} | {r['peak_rss_anon_mb']:.0f} |")
t, n = by["tureen soup"], by["naive_avg.py (torch)"]
print()
print(f"tureen soup vs naive_avg.py: {n['wall_s']/t['wall_s']:.1f}x faster, {n['peak_rss_anon_mb']/max(t['peak_rss_anon_mb'],1):.0f}x less private memory")
print(f"bit-identical to naive_avg.py: $identical")
print(f"tensor data identical with provenance metadata, python loads it: $data_identical")
print(f"tureen hash == b3sum: $hash_same")
PY

if [ "${KEEP_DATA:-1}" = 0 ]; then
    rm -rf "$data"
fi
