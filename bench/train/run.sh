#!/usr/bin/env bash
# Training throughput: tureen vs open_clip on the same 19.3M-param ConvNeXt CLIP
# (convnext_atto tower at 64 px, text width 256 x 4 layers, context 32), random
# tensors, batch 64, float32, 2 threads, 10 timed steps after 3 warmup steps, in the
# same run, alternating tools. Usage: bench/train/run.sh [BATCH] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BATCH=${1:-64}
ROUNDS=${2:-2}
PY=.venv/bin/python
OC=${OC_TRAIN_BENCH:-/work/shared/bench/oc_train_bench.py}
[ -x "$PY" ] || { echo "missing $PY: run scripts/setup-venv.sh" >&2; exit 1; }
[ -f "$OC" ] || { echo "missing $OC (set OC_TRAIN_BENCH)" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p tureen-torch --example train_bench
BIN="$CARGO_TARGET_DIR/release/examples/train_bench"
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

# Throughput on a shared machine is only comparable at similar load: report it.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
oc=(); tu=()
for r in $(seq "$ROUNDS"); do
  oc+=("$("$PY" "$OC" "$BATCH" | awk '/samples\/s/ {print $NF}')")
  tu+=("$("$BIN" "$BATCH" 2 10 | awk '/samples\/s/ {print $NF}')")
done
best() { printf '%s\n' "$@" | sort -g | tail -1; }
OCB=$(best "${oc[@]}"); TUB=$(best "${tu[@]}")
printf '\n| tool | batch | samples/s (best of %s) | all runs |\n|---|---|---|---|\n' "$ROUNDS"
printf '| open_clip (oc_train_bench.py) | %s | %s | %s |\n' "$BATCH" "$OCB" "${oc[*]}"
printf '| tureen (train_bench) | %s | %s | %s |\n' "$BATCH" "$TUB" "${tu[*]}"
awk -v a="$TUB" -v b="$OCB" 'BEGIN { printf "\nratio tureen / open_clip: %.2fx\n", a / b }'
printf 'load average (1/5/15 min): %s before, %s after\n' "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"
