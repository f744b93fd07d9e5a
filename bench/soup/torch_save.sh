#!/usr/bin/env bash
# Benchmark `tureen soup` of torch.save checkpoints: three convnext_xxlarge-shaped bf16
# `.pt` files (gen_ckpts.py's tensors, written by torch.save in open_clip's layout)
# against naive_avg_pt.py (naive_avg.py with torch.load), today's soup of the same
# tensors as safetensors, and the `cat` floor: wall time and peak private memory
# (RssAnon), in one run. Not a test: prints a table. Needs ~30 GB of disk in $BENCH_DATA
# and ~8 GB of RAM (for naive_avg_pt.py).
#
#   bench/soup/torch_save.sh              # generate data if missing, build, measure, print
#   KEEP_DATA=0 bench/soup/torch_save.sh  # also delete the data afterwards
#
# Environment: BENCH_DATA (default /work/bench-data), PYTHON (default .venv/bin/python),
# SHARED_BENCH (default ../shared/bench next to the repo), CARGO_TARGET_DIR, REPEAT (runs
# per tureen row, default 3; the table shows the median; naive_avg_pt.py runs once).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/bench/soup
data=${BENCH_DATA:-/work/bench-data}
py=${PYTHON:-$repo/.venv/bin/python}
shared=${SHARED_BENCH:-$(cd "$repo/.." && pwd)/shared/bench}
target=${CARGO_TARGET_DIR:-$repo/target}
repeat=${REPEAT:-3}

echo "== building tureen (release)" >&2
(cd "$repo" && cargo build --release --locked --bin tureen >&2)
tureen=$target/release/tureen

mkdir -p "$data/ckpts" "$data/pt"
st=() pt=()
for i in 0 1 2; do
    st+=("$data/ckpts/ckpt$i.safetensors")
    pt+=("$data/pt/epoch_$((i + 1)).pt")
done
if [ ! -f "${st[2]}" ]; then
    echo "== generating 3 convnext_xxlarge-shaped bf16 checkpoints in $data/ckpts" >&2
    "$py" "$shared/gen_ckpts.py" 3 bfloat16 "$data/ckpts" >&2
fi
for i in 0 1 2; do
    if [ ! -f "${pt[$i]}" ]; then
        echo "== torch.save ${pt[$i]}" >&2
        "$py" "$here/to_torch_save.py" "${st[$i]}" "${pt[$i]}" "$((i + 1))"
    fi
done
cold=$data/cold-pt
rm -rf "$cold" && mkdir -p "$cold"
results=$data/results-pt.jsonl
: > "$results"
load_before=$(cut -d' ' -f1 /proc/loadavg)

# timed N OUTPUT LABEL INPUTS -- COMMAND...: N runs, each after removing OUTPUT, flushing
# dirty pages and reading the row's INPUTS (a space-separated list) into the page cache.
timed() {
    local n=$1 out=$2 label=$3 inputs=$4
    shift 5
    for _ in $(seq "$n"); do
        if [ -n "$out" ]; then rm -f "$out"; fi
        sync
        # shellcheck disable=SC2086 # INPUTS is a list
        cat $inputs > /dev/null
        python3 "$here/measure.py" "$label" -- "$@" >> "$results"
    done
}

out=$data/soup-pt
timed "$repeat" "" "cat 3 .pt > /dev/null" "${pt[*]}" -- sh -c "cat ${pt[*]} > /dev/null"
timed "$repeat" "$out-st.safetensors" "tureen soup of 3 .safetensors (today's soup)" "${st[*]}" -- \
    env -C "$cold" "$tureen" -q soup "${st[@]}" -o "$out-st.safetensors"
timed "$repeat" "$out.safetensors" "tureen soup of 3 .pt" "${pt[*]}" -- \
    env -C "$cold" "$tureen" -q soup "${pt[@]}" -o "$out.safetensors"
timed "$repeat" "$out-nometa.safetensors" "tureen soup of 3 .pt --no-metadata" "${pt[*]}" -- \
    env -C "$cold" "$tureen" -q soup "${pt[@]}" -o "$out-nometa.safetensors" --no-metadata
timed "$repeat" "$data/convert.safetensors" "tureen convert 1 .pt" "${pt[0]}" -- \
    env -C "$cold" "$tureen" -q convert "${pt[0]}" -o "$data/convert.safetensors"
timed 1 "$out-naive.safetensors" "naive_avg_pt.py (torch.load)" "${pt[*]}" -- \
    "$py" "$here/naive_avg_pt.py" "$out-naive.safetensors" "${pt[@]}"

if cmp -s "$out-nometa.safetensors" "$out-naive.safetensors"; then
    identical="yes (cmp: whole file, --no-metadata)"
else
    identical="NO"
fi
"$py" "$here/table.py" "$results" "cat 3 .pt > /dev/null" "$load_before" \
    "naive_avg_pt.py (torch.load)" "tureen soup of 3 .pt" "tureen soup of 3 .safetensors (today's soup)"
echo "tureen soup of .pt bit-identical to naive_avg_pt.py: $identical"
rm -f "$out"*.safetensors "$data/convert.safetensors"
if [ "${KEEP_DATA:-1}" = 0 ]; then
    rm -rf "$data"
fi
